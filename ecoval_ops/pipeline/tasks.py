"""The Airflow tasks of the valuation task group (:mod:`ecoval_ops.airflow`): each runs one step of :mod:`.flow`.

``detect`` is the only task that reads the DAG run's params: it resolves the run's settings
once, in the order of :func:`~ecoval_ops.config.resolve_settings` (run conf > Airflow Variable
``ecoval_<name>`` > environment variable ``ECOVAL_<NAME>`` > :class:`~ecoval_ops.config.RunConfig`'s
default), and pins them with the versions read. Every later task takes the pinned run from the
XCom of ``detect`` (``embed``, ``decide``) or ``decide`` (the rest), so a Variable changed while a
run is in flight changes nothing in it. Tasks return plain dicts for XCom; no data passes
between tasks. Bad input (:class:`~ecoval_ops.exceptions.InvalidInputError`) fails a task
without retries; anything else is retried as the DAG says.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import replace
from typing import Any, TypeVar, cast

from ecoval_ops.config import load_config, resolve_settings, settings
from ecoval_ops.engines import engine_for
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.pipeline.catalog import TABLES_ENV
from ecoval_ops.pipeline.flow import FAILURE, branch_targets, decode, encode, step
from ecoval_ops.pipeline.pinned import PinnedRun
from ecoval_ops.pipeline.refs import Detection, RunRef
from ecoval_ops.storage import TableRef, is_secret_option, parse_storage_options

__all__ = [
    "branch",
    "declare_lineage",
    "detect",
    "fail",
    "failed_tasks",
    "notify",
    "resolved_settings",
    "run_step",
]

log = logging.getLogger(__name__)

_Task = TypeVar("_Task", bound=Callable[..., Any])


def _no_retry_on_bad_input(fn: _Task) -> _Task:
    """Bad input fails the task at once: a retry would read the same input and fail the same way."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InvalidInputError as e:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{type(e).__name__}: {e}") from e

    return cast(_Task, run)


class _Variables(Mapping[str, Any]):
    """The Airflow Variables ``ecoval_<name>``, read only when a setting is looked up."""

    def __getitem__(self, name: str) -> Any:
        from airflow.sdk import Variable

        value = Variable.get(f"ecoval_{name}", default=None)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Any:
        return iter(s.name for s in settings())

    def __len__(self) -> int:
        return sum(1 for _ in settings())


def _environment() -> dict[str, str]:
    names = [n for s in settings() for n in (s.name, *s.aliases)]
    return {n: os.environ[f"ECOVAL_{n.upper()}"] for n in names if f"ECOVAL_{n.upper()}" in os.environ}


def _layers(params: Mapping[str, Any], variables: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return [params, _Variables() if variables is None else variables, _environment()]


def resolved_settings(params: Mapping[str, Any], variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of a DAG run: params, then Variables, then the environment (the defaults are the config's).

    Args:
        params: the settings the run was given (its params, or the task group's arguments).
        variables: the Variables layer; default the Airflow Variables ``ecoval_<name>``.
    """
    return resolve_settings(_layers(params, variables))


def _with_secrets(run: PinnedRun) -> PinnedRun:
    """``run`` with the secret storage options of this worker's Variable or environment.

    XCom carries none (:meth:`~ecoval_ops.config.RunConfig.pinned`), so each task takes them
    where ``detect`` found them; the ``AWS_*`` environment variables need no such step.
    """
    given = resolve_settings(_layers({}, None), ["storage_options"]).get("storage_options")
    secrets = {k: v for k, v in (parse_storage_options(given) or {}).items() if is_secret_option(k)}
    return replace(run, config=run.config.with_storage_options(secrets)) if secrets else run


def _secrets_of(result: Any) -> Any:
    """A decoded :class:`~.refs.RunRef` or :class:`~.refs.Detection` with this worker's secrets."""
    if isinstance(result, (RunRef, Detection)):
        return replace(result, run=_with_secrets(result.run))
    return result


def _ref(ref: Mapping[str, Any]) -> RunRef:
    decoded: RunRef = _secrets_of(RunRef.from_dict(dict(ref)))
    return decoded


@_no_retry_on_bad_input
def detect(params: Mapping[str, Any], *, table: str | None = None, unattended: bool = False) -> dict[str, Any]:
    """Resolve the settings, pin them with the source version; count its rows and the new ones.

    Args:
        params: the DAG run's params.
        table: the table a DAG of the tables file is for; a run resolved to another table is
            refused (its assets and lineage are that table's).
        unattended: a scheduled or asset-triggered run. Where no layer names the table, its key and
            label (a deployment that has not named its tables yet), it is skipped with one log
            line instead of failing; a run someone triggered still fails and says what is missing.

    Raises:
        InvalidInputError: invalid settings, or a table other than ``table``.
        AirflowSkipException: an unattended run without the table's settings.
    """
    # Resolved once: each Variable looked up is a call to Airflow's API.
    resolved = resolved_settings(params)
    missing = [s.name for s in settings() if s.required and s.name not in resolved]
    if unattended and missing:
        from airflow.sdk.exceptions import AirflowSkipException

        message = (
            f"skipped: no table settings ({', '.join(missing)} not set); name the tables with {TABLES_ENV} "
            "or set the Variables ecoval_<name> (or ECOVAL_<NAME>), then runs value them"
        )
        log.warning(message)
        raise AirflowSkipException(message)
    cfg = load_config(None, quiet=True, **resolved)
    if table is not None and cfg.source.table != TableRef.of(table):
        raise InvalidInputError(
            f"this DAG values {table}; the run asked for {cfg.source.table}, which belongs to another DAG of the "
            "tables file"
        )
    with closing(engine_for(cfg)) as engine:
        found: Detection = step("detect").call(engine, cfg)
    log.info(
        "source version %d: %d rows, %d not valued yet; settings pinned: %s",
        found.run.table_version,
        found.rows,
        found.new_rows,
        found.run.config.loggable(),
    )
    return found.to_dict()


@_no_retry_on_bad_input
def run_step(name: str, *inputs: Any, **hooks: Any) -> Any:
    """Run step ``name`` of :data:`~.flow.STEPS` on its inputs as XCom holds them; its result for XCom.

    Args:
        name: the step.
        inputs: the results of the step's ``inputs``, in order, then the item of a mapped step.
        hooks: the step's extras (``run_key`` of ``decide``).
    """
    s = step(name)
    args = [_secrets_of(decode(n, v)) for n, v in zip(s.inputs, inputs, strict=False)]
    args += inputs[len(s.inputs) :]
    if not s.engine:
        result = s.call(None, *args, **hooks)
    else:
        with closing(engine_for(args[0].run.config)) as engine:
            result = s.call(engine, *args, **hooks)
    log.info("%s: %s", name, _brief(result))
    return encode(result)


def _brief(result: Any) -> Any:
    if isinstance(result, RunRef):
        return f"mode {result.mode}, MLflow run {result.run_id}, model version {result.model_version}"
    return result


def branch(ref: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The task ids to follow the decision: the steps of the run's mode that follow it directly, or ``nothing_to_do``.

    A branch skips the direct downstream tasks it does not name (:func:`~.flow.branch_targets`).
    """
    mode = ref["mode"]
    chosen = [prefix + t.name for t in branch_targets() if t.modes is not None and mode in t.modes]
    return chosen or [prefix + "nothing_to_do"]


def declare_lineage(
    task: Any, ref: Mapping[str, Any], figures: Mapping[str, Any] | None = None, written: int | None = None
) -> None:
    """Declare the run's tables as the running ``task``'s inlets and outlets (kept: its asset outlets).

    Airflow's OpenLineage listener reads them when the task ends and reports them with their facets
    (:func:`~ecoval_ops.pipeline.lineage.openlineage_datasets`); Airflow's own asset events ignore
    them. Nothing is sent unless an OpenLineage transport is configured.
    """
    from openlineage.client.event_v2 import Dataset

    from ecoval_ops.pipeline.lineage import openlineage_datasets

    inputs, outputs = openlineage_datasets(_ref(ref).run, figures, written)
    task.inlets = [*inputs]
    task.outlets = [*(o for o in task.outlets if not isinstance(o, Dataset)), *outputs]


def notify(specs: list[dict[str, Any]], context: Mapping[str, Any], reason: str) -> None:
    """Call each notifier of ``specs`` (a ``class`` import path and its keyword arguments) on an alert.

    The notifiers see the task's context with ``ecoval_alert``, the reason, for their templates.
    """
    import importlib

    for spec in specs:
        module, _, name = spec["class"].rpartition(".")
        try:
            notifier_class = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as e:
            raise InvalidInputError(f"notifier {spec['class']!r} cannot be imported: {e}") from e
        notifier = notifier_class(**{k: v for k, v in spec.items() if k != "class"})
        log.warning("alert: %s; calling %s", reason, spec["class"])
        notifier({**context, "ecoval_alert": reason})


def failed_tasks(dag_id: str, run_id: str) -> list[str]:
    """The tasks of a DAG run that failed (or could not run because an upstream task failed).

    Asked of Airflow through the task SDK, once every other task of the run is done.
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    return sorted(task for task, state in states.items() if state in ("failed", "upstream_failed"))


def fail(ref: Mapping[str, Any]) -> None:
    """:data:`~.flow.FAILURE` after a failed task: the parent run closed FAILED (its workspace stays for a retry)."""
    FAILURE.call(None, _ref(ref))
