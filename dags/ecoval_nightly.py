"""ecoval_nightly: value the new rows of Delta tables every night (architecture.md, data flow).

The DAG is :func:`ecoval_ops.airflow.valuation_group` (its task ids unprefixed), the steps of
:data:`ecoval_ops.pipeline.flow.STEPS`: detect -> embed -> decide -> branch: refit (cluster ->
LCO shards, mapped, pool ``ecoval_gpu`` and queue ``$ECOVAL_GPU_QUEUE``, default ``gpu`` ->
fit_model) or incremental -> propagate -> write (one MERGE) -> report. Tasks pass references,
never data.

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

from airflow.sdk import DAG, Asset, AssetAlias, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from ecoval_ops.airflow import dag_params, valuation_group
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.pipeline.catalog import TABLES_ENV, TableEntry, read_tables, source_uri

_DEFAULT_ARGS = {"owner": "ecoval", "retries": 2, "retry_delay": timedelta(minutes=1)}


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

    @dag(
        dag_id=dag_id,
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(schedule or os.environ.get("ECOVAL_SCHEDULE", "0 2 * * *"), timezone="UTC"),
            assets=[Asset(source_uri(table))],
        ),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=dag_params(defaults),
        default_args=_DEFAULT_ARGS,
        tags=["ecoval", "data-valuation"],
        doc_md=__doc__,
    )
    def ecoval_nightly() -> None:
        valuation_group(
            table if pinned else None,
            group_id="ecoval",
            prefix_group_id=False,
            from_params=True,
            values=AssetAlias(f"ecoval_values__{dag_id}"),
            notifiers=notifiers,
        )

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
