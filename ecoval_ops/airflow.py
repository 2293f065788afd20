"""EcoVal in a team's own Airflow DAG: a task group built from the run's steps (:data:`~.pipeline.flow.STEPS`).

Embed it between the DAG's own tasks, as a provider's task group::

    from ecoval_ops.airflow import valuation_group

    @dag(schedule="@daily", start_date=datetime(2026, 1, 1))
    def nightly_training():
        ingest() >> valuation_group(table="s3://lake/train", key="id", label="y", features="a,b") >> train()

Each step is one task (the shards are mapped, in the pool ``ecoval_gpu`` and queue
``$ECOVAL_GPU_QUEUE``); a branch after ``decide`` follows the run's mode; ``mark_failed`` closes the
MLflow parent run FAILED once every task is done, if one failed; ``done``, the group's one leaf,
ends a run that valued its rows or had none to value, so the DAG's next task waits for the
values and does not run after a failed valuation. The ``write`` task publishes the
values asset (:func:`values_asset`), which other DAGs can be scheduled on. ``dags/ecoval_nightly.py``
is this group with its settings from the DAG run's params.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from inspect import Parameter, Signature
from typing import Any

from airflow.sdk import Asset, AssetAlias, Param, TaskGroup, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ecoval_ops.config import OUTPUT_SETTINGS, settings
from ecoval_ops.pipeline import tasks
from ecoval_ops.pipeline.catalog import values_uri
from ecoval_ops.pipeline.flow import DECISION, STEPS, Step, branch_targets, decode, step

__all__ = ["GPU_POOL", "dag_params", "valuation_group", "values_asset"]

GPU_POOL = "ecoval_gpu"
_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _gpu_queue() -> str:
    # Celery routes the shards to the workers that listen on this queue (the GPU workers); a
    # deployment without one sets ECOVAL_GPU_QUEUE=default. The LocalExecutor ignores queues.
    return os.environ.get("ECOVAL_GPU_QUEUE") or "gpu"


def values_asset(table: str) -> Asset:
    """The asset the ``write`` task publishes for ``table``: ``ecoval://values/<path>``."""
    return Asset(values_uri(table))


def dag_params(defaults: Mapping[str, Any]) -> dict[str, Param]:
    """A DAG's params: every run setting, by group, ``defaults`` as their defaults (empty: resolved at run time)."""
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


def _widened(s: Step) -> bool:
    """``s`` runs in more modes than a step it waits for (it must run when that one is skipped)."""
    return s.modes is not None and any((u := step(n).modes) is not None and u < s.modes for n in s.needs)


def _callable(s: Step, run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` with the signature Airflow maps XCom arguments by: the step's inputs (and ``item``)."""
    names = [*s.inputs, *(["item"] if s.mapped_over else [])]
    run.__signature__ = Signature([Parameter(n, Parameter.KEYWORD_ONLY) for n in names])  # type: ignore[attr-defined]
    run.__name__ = s.name
    return run


class _Group:
    """The settings and outlets of one task group, and the task body of each step."""

    def __init__(
        self,
        given: dict[str, Any],
        *,
        table: str | None,
        from_params: bool,
        values: Asset | AssetAlias | None,
        notifiers: list[dict[str, Any]] | None,
        prefix: str,
    ) -> None:
        self.given, self.table, self.from_params = given, table, from_params
        self.values, self.notifiers, self.prefix = values, notifiers, prefix

    def detect(self) -> dict[str, Any]:
        context = get_current_context()
        given = {k: v for k, v in context["params"].items() if v not in (None, "")} if self.from_params else {}
        params = {**self.given, **given}
        unattended = context["dag_run"].run_type in ("scheduled", "asset_triggered")
        return tasks.detect(params, table=self.table, unattended=unattended)

    def body(self, s: Step) -> Callable[..., Any]:
        if s.name == "detect":
            return _callable(s, lambda: self.detect())

        def run(**inputs: Any) -> Any:
            args = [inputs[n] for n in s.inputs] + ([inputs["item"]] if s.mapped_over else [])
            hooks = {"run_key": get_current_context()["run_id"]} if s.name == DECISION else {}
            result = tasks.run_step(s.name, *args, **hooks)
            if s.name in ("write", "report"):
                self.published(s.name, inputs, result)
            return result

        return _callable(s, run)

    def published(self, name: str, inputs: dict[str, Any], result: Any) -> None:
        """The values asset (``write``), the lineage (``write``, ``report``) and the alert's notifiers."""
        context, ref = get_current_context(), inputs[DECISION]
        if name == "write":
            if isinstance(self.values, AssetAlias):
                valued = decode(DECISION, ref).run.config.source.table
                context["outlet_events"][self.values].add(values_asset(str(valued)))
            tasks.declare_lineage(context["task"], ref, written=result)
            return
        tasks.declare_lineage(context["task"], ref, result, inputs["write"])
        if result.get("alert") and self.notifiers:
            tasks.notify(self.notifiers, context, result["alert"])

    def mark_failed(self) -> None:
        # Runs once every task is done (retries and mapped shards included), so the MLflow parent is
        # closed after the run has really ended; failing here fails the DAG run.
        context = get_current_context()
        mine = self.prefix + "mark_failed"
        failed = [
            t
            for t in tasks.failed_tasks(context["dag"].dag_id, context["run_id"])
            if t.startswith(self.prefix) and t != mine
        ]
        if not failed:
            raise AirflowSkipException("no task failed")
        ref = context["ti"].xcom_pull(task_ids=self.prefix + DECISION)
        if ref:
            tasks.fail(ref)
        raise AirflowFailException(f"the run failed at {', '.join(failed)}; its MLflow parent run is closed FAILED")


def valuation_group(
    table: str | None = None,
    key: str | None = None,
    label: str | None = None,
    *,
    group_id: str = "ecoval",
    prefix_group_id: bool = True,
    from_params: bool = False,
    values: Asset | AssetAlias | None = None,
    notifiers: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> TaskGroup:
    """The valuation of ``table`` as a task group of the current DAG.

    Args:
        table: the source table (a path or URI); with ``from_params``, a run that names
            another table is refused; None lets the run's params name it.
        key: row-key column.
        label: label column.
        group_id: the group's id, the prefix of its task ids (``ecoval.detect``, ...).
        prefix_group_id: prefix the task ids with ``group_id``.
        from_params: take the settings from the DAG run's params, over these arguments (the
            ``ecoval_nightly`` DAG's way); otherwise these arguments are the run's settings.
        values: the outlet of ``write``; default :func:`values_asset` of ``table``.
        notifiers: notifier specs (a ``class`` path and its arguments) called on an alert.
        **settings: any other run setting by its flat name (``features="a,b"``, ``n_clusters=8``).
            As everywhere, a setting not given comes from the Variable ``ecoval_<name>``, then
            ``ECOVAL_<NAME>``, then its default.

    Returns:
        The task group; ``upstream >> group >> downstream`` orders it among the DAG's tasks.
    """
    given = {k: v for k, v in {"table": table, "key": key, "label": label, **settings}.items() if v is not None}
    if values is None and table is None:
        raise ValueError("valuation_group needs the table, or values= naming an asset alias for the one the run names")
    outlet = values if values is not None else values_asset(table or "")
    with TaskGroup(group_id, prefix_group_id=prefix_group_id) as group:
        prefix = f"{group_id}." if prefix_group_id else ""
        body = _Group(given, table=table, from_params=from_params, values=outlet, notifiers=notifiers, prefix=prefix)
        made: dict[str, Any] = {}
        for s in STEPS:
            extra: dict[str, Any] = {"pool": GPU_POOL, "queue": _gpu_queue()} if s.trains else {}
            if _widened(s):
                extra["trigger_rule"] = "none_failed_min_one_success"
            if s.name == "write":
                extra["outlets"] = [outlet]
            op: Any = task(python_callable=body.body(s), task_id=s.name, **extra)
            kwargs = {n: made[n] for n in s.inputs}
            made[s.name] = op.partial(**kwargs).expand(item=made[s.mapped_over]) if s.mapped_over else op(**kwargs)
            for n in s.after:
                made[n] >> made[s.name]
        chosen: Any = task.branch(python_callable=lambda decide: tasks.branch(decide, prefix), task_id="branch")(
            made[DECISION]
        )
        nothing = task(python_callable=_nothing_to_do, task_id="nothing_to_do")(made["detect"])
        chosen >> [*(made[t.name] for t in branch_targets()), nothing]
        failed: Any = task(
            python_callable=body.mark_failed, task_id="mark_failed", trigger_rule="all_done", retries=0
        )()
        failed.set_upstream(list(made.values()))
        # The group's one leaf, which the DAG's next task waits on: a run that valued its rows or had
        # none to value ends here; a failed one does not (mark_failed failed).
        done: Any = task(python_callable=_done, task_id="done", trigger_rule="none_failed_min_one_success")()
        done.set_upstream([made[STEPS[-1].name], nothing, failed])
    return group


def _done() -> None:
    """Nothing: the end of the group."""


def _nothing_to_do(detected: dict[str, Any]) -> None:
    print(f"no new rows in version {detected['run']['table_version']}: nothing valued, nothing written")
