"""The steps of one valuation run, as plain functions over references (architecture.md).

detect -> embed -> decide -> [refit: cluster -> train_shard x N -> fit_model] -> propagate ->
write -> report (the refit's steps are in :mod:`.fitting`). ``ecoval run`` calls them in turn in
one process; the Airflow DAG calls each from its own task and passes the :class:`RunRef` (the
:class:`PinnedRun`, the mode, the run id, the model version), never data: what a step leaves
for the next lies in the table's :class:`Workspace` or in MLflow.

``detect`` is the only step that resolves anything: the configuration and the source and
validation versions are pinned there, and every later step reads exactly those.

Every step can be retried: a finished shard, plan, model or values file is reused, the
embeddings append and the MERGE are idempotent Delta transactions, and registering the model
again for the same run returns the version registered before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ecoval_ops.config import RunConfig
from ecoval_ops.engines import Engine
from ecoval_ops.exceptions import EcovalError, InvalidInputError, StateFormatError
from ecoval_ops.files import parquet_dataset
from ecoval_ops.lakehouse import open_table
from ecoval_ops.lakehouse.leases import write_lease
from ecoval_ops.lakehouse.source_checks import check_seen_labels, label_classes, require_columns
from ecoval_ops.lakehouse.tables import table_exists
from ecoval_ops.pipeline.fitting import HOLDOUT_TAG
from ecoval_ops.pipeline.lineage import table_input
from ecoval_ops.pipeline.pinned import PinnedRun, source_columns
from ecoval_ops.pipeline.refit import decide_mode
from ecoval_ops.pipeline.refs import Detection, RunRef
from ecoval_ops.pipeline.review import publish
from ecoval_ops.process import fault_point, owner_gone, process_owner
from ecoval_ops.reporting.pages import REMOVAL_FILE, TOP_ROWS, saved_curve
from ecoval_ops.tracking.runs import OWNER_TAG
from ecoval_ops.valuation.reference import HOLDOUT_SCHEME

if TYPE_CHECKING:
    from ecoval_ops.valuation import EcoVal

__all__ = [
    "Detection",
    "RunRef",
    "decide",
    "detect",
    "embed",
    "fail",
    "propagate",
    "report",
    "write",
]

log = logging.getLogger(__name__)


def detect(cfg: RunConfig, engine: Engine) -> Detection:
    """Pin the run: its configuration, the source (and validation) version; check and count rows.

    The engine runs the checks and counts where the rows lie; only counts come back.

    Raises:
        InvalidInputError: not a Delta table, missing columns, an empty table, null keys or
            labels, duplicate keys, a single class, validation labels unseen in the table.
    """
    version = int(open_table(cfg.source.table).version())
    columns = source_columns(cfg)
    where = f"{cfg.source.table}@v{version}"
    if cfg.tracking.review_columns:
        require_columns(cfg.source.table, version, cfg.tracking.review_columns)
    fraction = cfg.source.validation_fraction if cfg.source.validation_table is None else None
    check = engine.check_source(columns, cfg.source.table, version, fraction=fraction)
    classes = label_classes(check, cfg.source.label, where)
    val_version = None
    if cfg.source.validation_table is None:
        if check.held_out in (0, check.rows):
            raise InvalidInputError(
                f"validation fraction {cfg.source.validation_fraction} of the {check.rows} rows of {where} "
                f"holds out {check.held_out} rows; give --validation-table or another --validation-fraction"
            )
    else:
        val_version = int(open_table(cfg.source.validation_table).version())
        check_seen_labels(
            engine.check_source(columns, cfg.source.validation_table, val_version, fraction=None),
            cfg.source.label,
            classes,
            f"validation table {cfg.source.validation_table}@v{val_version}",
            where,
        )
    values_version = None
    if cfg.source.values_table is not None and table_exists(cfg.source.values_table):
        values_version = int(open_table(cfg.source.values_table).version())
    run = PinnedRun.pin(cfg, version, val_version, values_version)
    return Detection(run, check.rows, engine.new_rows(run).rows)


def embed(run: PinnedRun, engine: Engine) -> int:
    """Embed the rows of the pinned source (and validation) version that lack an embedding.

    Returns:
        Rows embedded (0 with ``embedding_col``, or when every row already has one).
    """
    embedder, target = run.embedder, run.embeddings_table()
    if embedder is None or target is None:
        return 0
    cfg = run.config
    count = engine.embed(cfg, cfg.source.table, run.table_version, embedder, target)
    fault_point("embedded")
    validation = run.embeddings_table(validation=True)
    if cfg.source.validation_table is not None and run.validation_version is not None and validation is not None:
        count += engine.embed(cfg, cfg.source.validation_table, run.validation_version, embedder, validation)
    return count


def _current_model(run: PinnedRun) -> tuple[EcoVal, str] | None:
    """The registered model (alias ``current``) and its version; None when the run must refit.

    A model registered by an older method (another state format), or fitted on another hold-out
    split than :data:`~ecoval_ops.valuation.reference.HOLDOUT_SCHEME`, cannot value new rows
    consistently: ``refit=never`` refuses it, every other policy refits with a warning.

    Raises:
        StateFormatError: such a model under ``refit=never``.
    """
    cfg, registry = run.config, run.tracker.registry
    name = cfg.registered_model_name
    try:
        current = registry.load_current(name)
        if current is not None and cfg.source.validation_table is None:
            split = registry.version_tag(name, current[1], HOLDOUT_TAG)
            if split != HOLDOUT_SCHEME:
                raise StateFormatError(
                    f"version {current[1]} was fitted on the hold-out split {split or 'blake2b'}; "
                    f"this version holds out by {HOLDOUT_SCHEME}"
                )
    except StateFormatError as e:
        if cfg.refit == "never":
            raise StateFormatError(f"the current model of {name}: {e}; run with --refit auto") from e
        log.warning("the current model of %s cannot value new rows (%s): refitting", name, e)
        return None
    return current


def decide(run: PinnedRun, engine: Engine, *, run_key: str | None = None) -> RunRef:
    """Choose the mode; for refit and incremental runs open the parent MLflow run.

    An incremental run saves the registered model (alias ``current``) to its workspace, so
    the propagation reads it from there. ``run_key`` (Airflow's DAG run id) makes a retried
    call return the parent run it opened before. A run without one records its process
    (``ecoval.owner``); parent runs of the table whose process is gone are closed KILLED first
    and their workspace removed.
    """
    cfg, version = run.config, run.table_version
    new = engine.new_rows(run)
    tracker = run.tracker
    tracker.check_reachable()
    for stale in tracker.close_stale(str(cfg.source.table), owner_gone):
        log.warning("closed MLflow run %s of %s as KILLED: the process that opened it is gone", stale, cfg.source.table)
        run.workspace.remove_run(stale)
    current = _current_model(run)
    source = table_input(cfg.source.table, version, "valuation", new.digest)
    mode = decide_mode(
        cfg.refit, new.rows, source.rows, current[0] if current else None, lambda a: engine.new_cluster_counts(run, a)
    )
    if mode == "noop":
        return RunRef(run, "noop", None, current[1] if current else None)
    tags = {"ecoval.table": str(cfg.source.table), "ecoval.mode": mode, "ecoval.table_version_read": str(version)}
    if run.validation_version is not None:
        tags["ecoval.validation_version_read"] = str(run.validation_version)
    if run.embedder_fingerprint is not None:
        tags["ecoval.embedder_fingerprint"] = run.embedder_fingerprint
    if run_key is None:
        # Outside an orchestrator nothing else closes a parent run whose process was killed.
        tags[OWNER_TAG] = process_owner()
    name = f"{cfg.source.table.name}@v{version} {mode}"
    run_id = tracker.start(cfg.loggable(), tags, name=name, run_key=run_key)
    tables = [source]
    if cfg.source.validation_table is not None and run.validation_version is not None:
        tables.append(table_input(cfg.source.validation_table, run.validation_version, "validation"))
    tracker.log_tables(run_id, tables)
    if mode == "refit" or current is None:
        return RunRef(run, mode, run_id)
    ws = run.workspace
    with ws.atomic(ws.model(run_id)) as tmp:
        current[0].save(tmp)
    return RunRef(run, mode, run_id, current[1])


def _model_version(ref: RunRef) -> str:
    """The model version of the run: in ``ref``, or the one a refit registered from its run."""
    run_id = ref.started()
    version = ref.model_version or ref.run.tracker.registry.registered_version(
        ref.run.config.registered_model_name, run_id
    )
    if version is None:
        raise EcovalError(f"run {run_id} has registered no valuation model; fit_model must run first")
    return version


def propagate(ref: RunRef, engine: Engine) -> int:
    """Value the run's rows from their inputs: a refit's every row, an incremental run's new rows.

    A refit's inputs were written by ``fit_model``'s row pass (members in sample, the other rows
    out of sample); an incremental run makes them here for the rows no run has valued yet.

    Returns:
        Rows valued.
    """
    run_id, run = ref.started(), ref.run
    version = _model_version(ref)
    ws = run.workspace
    target, inputs, model = ws.values(run_id), ws.inputs(run_id), ws.model(run_id)
    if not ws.exists(target):
        if ref.mode != "refit" and not ws.exists(inputs):
            with ws.output(inputs) as out:
                engine.row_inputs(run, model, out, only_new=True)
        with ws.output(target) as out:
            engine.values(run, inputs, model, out, run_id=run_id, model_version=version)
    return int(parquet_dataset(target).count_rows())


def write(ref: RunRef, engine: Engine) -> int | None:
    """One MERGE of the run's values into the source table; None when it had committed before.

    A table in S3 is written under its write lease (:mod:`ecoval_ops.lakehouse.leases`), so an
    ecoval run on either engine never commits to it while another one does.
    """
    run_id, cfg = ref.started(), ref.run.config
    with write_lease(cfg.source.values_table or cfg.source.table):
        written = engine.write_values(
            cfg, ref.run.workspace.values(run_id), run_id=run_id, source_version=ref.table_version
        )
    fault_point("merged")
    return written


def report(ref: RunRef, engine: Engine, written: int | None, extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Log the run's metrics, tags and review artifacts, close the parent run FINISHED, drop its workspace.

    The engine summarises the run's values where they lie (:mod:`ecoval_ops.lakehouse.summary`);
    the review artifacts (:mod:`ecoval_ops.reporting.pages`) go under ``review/`` of the parent
    run; a clipped Gamma sets the tag ``ecoval.warning``.

    The night's figures of :mod:`ecoval_ops.reporting.night` are logged as ``night_*`` metrics; an alert sets
    the tag ``ecoval.alert``. The review carries ``trend.png``, the table's last 30 runs.

    Returns:
        The figures of the run (rows by mode, suspect share, production-function metrics, the
        night's figures and its alert, None when there is none).
    """
    from ecoval_ops.valuation import EcoVal

    run_id, run = ref.started(), ref.run
    ws, values_table = run.workspace, run.config.source.values_table
    if values_table is not None:
        committed = int(open_table(values_table).version()) if written is None else written
        run.tracker.log_tables(run_id, [table_input(values_table, committed, "values")])
    summary = engine.summarise(run, ws.values(run_id), top=TOP_ROWS)
    if summary is None:
        raise EcovalError(f"run {run_id} valued no row; propagate must run first")
    figures = publish(
        run,
        run_id,
        summary,
        ws.read(ws.model(run_id), EcoVal.load),
        curve=ws.read(ws.model(run_id) / REMOVAL_FILE, saved_curve) if ref.mode == "refit" else None,
        refit=ref.mode == "refit",
        extra=extra,
        tags={"ecoval.table_version_written": str(written), "ecoval.model_version": _model_version(ref)},
    )
    run.tracker.finish(run_id)
    ws.remove_run(run_id)
    return figures


def fail(ref: RunRef) -> None:
    """Close the parent run FAILED (its workspace stays for the retry or for inspection)."""
    if ref.run_id is not None:
        ref.run.tracker.finish(ref.run_id, failed=True)
