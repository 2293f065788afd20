"""ecoval_nightly: value the new rows of Delta tables every night (architecture.md, data flow).

detect -> embed -> decide -> branch: refit (cluster -> LCO shards, mapped, pool ``ecoval_gpu``
and queue ``$ECOVAL_GPU_QUEUE``, default ``gpu`` -> fit_model) or incremental -> propagate ->
write (one MERGE) -> report. Each task calls one function of :mod:`ecoval_ops.pipeline.tasks`;
tasks pass references, never data.

One DAG per table: with ``ECOVAL_TABLES`` naming a YAML list of tables
(:mod:`ecoval_ops.pipeline.catalog`), each entry is the DAG ``ecoval_nightly__<name>``, whose
params default to the entry's settings; without it, the one DAG ``ecoval_nightly`` values the
table its run settings name. A bad entry becomes a DAG whose only task fails with the reason.

Each DAG runs on its cron (the entry's ``schedule``, else ``ECOVAL_SCHEDULE``, default 02:00
UTC) and whenever its table's source asset (the table's ``file://`` URI) is updated; the write
task publishes the values asset of the table the run valued (``ecoval://values/<path>``,
through an asset alias), so the valuation's own MERGE does not trigger the DAG again. With an
OpenLineage transport configured, ``write`` and ``report`` report the source table as input and
the values' table as output, ``report`` with the night's data-quality metrics and alert rules.

``detect`` resolves each setting once, first given wins: the run's conf (over the entry's
settings), the Airflow Variable ``ecoval_<name>``, the environment variable ``ECOVAL_<NAME>``,
the default; every later task runs with what ``detect`` pinned.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    AssetAlias,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ecoval_ops.config import OUTPUT_SETTINGS, settings
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.pipeline import tasks
from ecoval_ops.pipeline.catalog import TABLES_ENV, TableEntry, read_tables, source_uri, values_uri

GPU_POOL = "ecoval_gpu"
# Celery routes the shards to the workers that listen on this queue (the GPU workers); a
# deployment without one sets ECOVAL_GPU_QUEUE=default. The LocalExecutor ignores queues.
GPU_QUEUE = os.environ.get("ECOVAL_GPU_QUEUE") or "gpu"
_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}
_DEFAULT_ARGS = {"owner": "ecoval", "retries": 2, "retry_delay": timedelta(minutes=1)}


def _params(defaults: dict[str, Any]) -> dict[str, Param]:
    return {
        s.name: Param(
            defaults.get(s.name),
            type=["null", _TYPES[s.kind]],
            description=f"{s.help}; empty: Variable ecoval_{s.name}, then ECOVAL_{s.name.upper()}, then the default",
            section=f"{s.group or 'run'} settings",
        )
        for s in settings()
        if s.name not in OUTPUT_SETTINGS
    }


def _conf() -> dict[str, Any]:
    return dict(get_current_context()["params"])


def nightly(
    dag_id: str,
    table: str,
    defaults: dict[str, Any],
    schedule: str | None,
    *,
    pinned: bool,
    notifiers: list[dict[str, Any]] | None = None,
) -> DAG:
    """The valuation DAG of one table (``pinned``: runs may not name another table).

    ``notifiers`` are called with the reason when a night is an alert.
    """
    values = AssetAlias(f"ecoval_values__{dag_id}")

    @dag(
        dag_id=dag_id,
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(schedule or os.environ.get("ECOVAL_SCHEDULE", "0 2 * * *"), timezone="UTC"),
            assets=[Asset(source_uri(table))],
        ),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=_params(defaults),
        default_args=_DEFAULT_ARGS,
        tags=["ecoval", "data-valuation"],
        doc_md=__doc__,
    )
    def ecoval_nightly() -> None:
        @task
        def detect() -> dict[str, Any]:
            unattended = get_current_context()["dag_run"].run_type in ("scheduled", "asset_triggered")
            return tasks.detect(_conf(), table=table if pinned else None, unattended=unattended)

        @task
        def embed(detected: dict[str, Any]) -> int:
            return tasks.embed(detected)

        @task
        def decide(detected: dict[str, Any]) -> dict[str, Any]:
            return tasks.decide(detected, get_current_context()["run_id"])

        @task.branch
        def branch(ref: dict[str, Any]) -> list[str]:
            return tasks.branch(ref)

        @task
        def cluster(ref: dict[str, Any]) -> list[int]:
            return tasks.cluster(ref)

        @task(pool=GPU_POOL, queue=GPU_QUEUE)
        def train_shard(ref: dict[str, Any], index: int) -> int:
            return tasks.train_shard(ref, index)

        @task
        def fit_model(ref: dict[str, Any]) -> dict[str, Any]:
            return tasks.fit_model(ref)

        @task(trigger_rule="none_failed_min_one_success")
        def propagate(ref: dict[str, Any]) -> int:
            return tasks.propagate(ref)

        @task(outlets=[values])
        def write(ref: dict[str, Any]) -> int | None:
            written = tasks.write(ref)
            context = get_current_context()
            context["outlet_events"][values].add(Asset(values_uri(ref["run"]["config"]["source"]["table"])))
            tasks.declare_lineage(context["task"], ref, written=written)
            return written

        @task
        def report(ref: dict[str, Any], written: int | None) -> dict[str, Any]:
            figures = tasks.report(ref, written)
            context = get_current_context()
            tasks.declare_lineage(context["task"], ref, figures, written)
            if figures.get("alert") and notifiers:
                tasks.notify(notifiers, context, figures["alert"])
            return figures

        @task
        def nothing_to_do(detected: dict[str, Any]) -> None:
            print(f"no new rows in version {detected['run']['table_version']}: nothing valued, nothing written")

        @task(trigger_rule="all_done", retries=0)
        def mark_failed() -> None:
            # Runs once every task is done (retries and mapped shards included), so the MLflow
            # parent is closed after the run has really ended; failing here fails the DAG run.
            context = get_current_context()
            failed = tasks.failed_tasks(context["dag"].dag_id, context["run_id"])
            if not failed:
                raise AirflowSkipException("no task failed")
            ref = context["ti"].xcom_pull(task_ids="decide")
            if ref:
                tasks.fail(ref)
            raise AirflowFailException(f"the run failed at {', '.join(failed)}; its MLflow parent run is closed FAILED")

        detected = detect()
        embedded = embed(detected)
        ref = decide(detected)
        embedded >> ref
        chosen = branch(ref)
        shards = cluster(ref)
        trained = train_shard.partial(ref=ref).expand(index=shards)
        fitted = fit_model(ref)
        trained >> fitted
        valued = propagate(ref)
        chosen >> [shards, valued, nothing_to_do(detected)]
        fitted >> valued
        written = write(ref)
        valued >> written
        reported = report(ref, written)
        [detected, embedded, ref, shards, trained, fitted, valued, written, reported] >> mark_failed()

    return ecoval_nightly()


def invalid(dag_id: str, problem: str) -> DAG:
    """A DAG of a bad entry of the tables file: its only task fails with the reason."""

    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args={"owner": "ecoval", "retries": 0},
        tags=["ecoval", "invalid-config"],
        doc_md=f"**This entry of `{TABLES_ENV}` cannot run:** {problem}",
    )
    def ecoval_invalid_entry() -> None:
        @task
        def invalid_entry() -> None:
            raise InvalidInputError(problem)

        invalid_entry()

    return ecoval_invalid_entry()


def _entry_dag(entry: TableEntry) -> DAG:
    dag_id = f"ecoval_nightly__{entry.name}"
    if entry.problem is not None:
        return invalid(dag_id, entry.problem)
    return nightly(
        dag_id, str(entry.settings["table"]), entry.settings, entry.schedule, pinned=True, notifiers=entry.notifiers
    )


if os.environ.get(TABLES_ENV):
    for _entry in read_tables(os.environ[TABLES_ENV]):
        _entry_dag(_entry)
else:
    nightly("ecoval_nightly", os.environ.get("ECOVAL_TABLE") or "/lakehouse/train", {}, None, pinned=False)
