"""ecoval_nightly: value the new rows of a Delta table every night (architecture.md, data flow).

detect -> embed -> decide -> branch: refit (cluster -> LCO shards, mapped, pool ``ecoval_gpu``
-> fit_model) or incremental -> propagate -> write (one MERGE) -> report. Each task calls one
function of :mod:`ecoval_ops.pipeline.tasks`; tasks pass references, never data.

Runs on the cron ``ECOVAL_SCHEDULE`` (default 02:00 UTC) and whenever the source table's asset
is updated; the value columns are published as their own asset, so the valuation's own MERGE
does not trigger the DAG again.

The params are the settings of ``ecoval run`` (snake_case), all empty by default. ``detect``
resolves each once, first given wins: the run's conf, the Airflow Variable ``ecoval_<name>``,
the environment variable ``ECOVAL_<NAME>``, the default; every later task runs with what
``detect`` pinned.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from ecoval_ops.config import OUTPUT_SETTINGS, settings
from ecoval_ops.pipeline import tasks

GPU_POOL = "ecoval_gpu"
_TABLE = os.environ.get("ECOVAL_TABLE") or "/lakehouse/train"
SOURCE = Asset(uri=Path(_TABLE).resolve().as_uri(), name=f"ecoval_source__{Path(_TABLE).name}")
VALUES = Asset(uri=f"ecoval://values/{Path(_TABLE).name}", name=f"ecoval_values__{Path(_TABLE).name}")

_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _params() -> dict[str, Param]:
    return {
        s.name: Param(
            None,
            type=["null", _TYPES[s.kind]],
            description=f"{s.help}; empty: Variable ecoval_{s.name}, then ECOVAL_{s.name.upper()}, then the default",
        )
        for s in settings()
        if s.name not in OUTPUT_SETTINGS
    }


def _conf() -> dict[str, Any]:
    return dict(get_current_context()["params"])


@dag(
    dag_id="ecoval_nightly",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(os.environ.get("ECOVAL_SCHEDULE", "0 2 * * *"), timezone="UTC"),
        assets=[SOURCE],
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=_params(),
    default_args={"owner": "ecoval", "retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["ecoval", "data-valuation"],
    doc_md=__doc__,
)
def ecoval_nightly() -> None:
    """The nightly valuation of one Delta table."""

    @task
    def detect() -> dict[str, Any]:
        return tasks.detect(_conf())

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

    @task(pool=GPU_POOL)
    def train_shard(ref: dict[str, Any], index: int) -> int:
        return tasks.train_shard(ref, index)

    @task
    def fit_model(ref: dict[str, Any]) -> dict[str, Any]:
        return tasks.fit_model(ref)

    @task(trigger_rule="none_failed_min_one_success")
    def propagate(ref: dict[str, Any]) -> int:
        return tasks.propagate(ref)

    @task(outlets=[VALUES])
    def write(ref: dict[str, Any]) -> int | None:
        return tasks.write(ref)

    @task
    def report(ref: dict[str, Any], written: int | None) -> dict[str, Any]:
        return tasks.report(ref, written)

    @task
    def nothing_to_do(detected: dict[str, Any]) -> None:
        print(f"no new rows in version {detected['run']['table_version']}: nothing valued, nothing written")

    @task(trigger_rule="one_failed", retries=0)
    def mark_failed() -> None:
        ref = get_current_context()["ti"].xcom_pull(task_ids="decide")
        if ref:
            tasks.fail(ref)

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


ecoval_nightly()
