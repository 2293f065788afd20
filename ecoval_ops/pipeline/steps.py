"""The steps of one valuation run, as plain functions over references (architecture.md).

detect -> embed -> decide -> [refit: cluster -> train_shard x N -> fit_model] -> propagate ->
write -> report. ``ecoval run`` calls them in turn in one process; the Airflow DAG calls each
from its own task and passes the :class:`RunRef` (the :class:`PinnedRun`, the mode, the run id,
the model version), never data: what a step leaves for the next lies in the table's
:class:`Workspace` or in MLflow.

``detect`` is the only step that resolves anything: the configuration and the source and
validation versions are pinned there, and every later step reads exactly those.

Every step can be retried: a finished shard, plan, model or values file is reused, the
embeddings append and the MERGE are idempotent Delta transactions, and registering the model
again for the same run returns the version registered before.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError, InvalidInputError, StateFormatError
from ecoval_ops.lakehouse import open_table
from ecoval_ops.lakehouse.source import (
    Rows,
    check_seen_labels,
    check_source,
    label_classes,
    read_rows,
    require_columns,
    unvalued_keys,
)
from ecoval_ops.lakehouse.split import holdout_mask
from ecoval_ops.pipeline.engines import Engine
from ecoval_ops.pipeline.pinned import PinnedRun, source_columns
from ecoval_ops.pipeline.refit import decide_mode
from ecoval_ops.pipeline.refs import Detection, RunRef
from ecoval_ops.pipeline.review import REMOVAL_FILE, publish, removal_curve, saved_curve
from ecoval_ops.process import fault_point, owner_gone, process_owner
from ecoval_ops.tracking.runs import OWNER_TAG

__all__ = [
    "Detection",
    "RunRef",
    "cluster",
    "decide",
    "detect",
    "embed",
    "fail",
    "fit_model",
    "propagate",
    "report",
    "train_shard",
    "write",
]

log = logging.getLogger(__name__)


def _rows(run: PinnedRun, *, only_new: bool = False) -> Rows:
    return read_rows(
        run.columns,
        run.config.table,
        embeddings=run.embeddings_table(),
        version=run.table_version,
        only_new=only_new,
        valued=run.valued,
    )


def detect(cfg: RunConfig) -> Detection:
    """Pin the run: its configuration, the source (and validation) version; check and count rows.

    Raises:
        InvalidInputError: not a Delta table, missing columns, an empty table, null keys or
            labels, duplicate keys, a single class, validation labels unseen in the table.
    """
    version = int(open_table(cfg.table).version())
    columns = source_columns(cfg)
    if cfg.review_columns:
        require_columns(cfg.table, version, cfg.review_columns)
    data = check_source(columns, cfg.table, version)
    classes = label_classes(data, cfg.label, f"{cfg.table}@v{version}")
    val_version = None
    if cfg.validation_table is None:
        held_out = int(holdout_mask(data.column(cfg.key).to_pylist(), cfg.validation_fraction).sum())
        if held_out in (0, data.num_rows):
            raise InvalidInputError(
                f"validation fraction {cfg.validation_fraction} of the {data.num_rows} rows of {cfg.table}@v{version} "
                f"holds out {held_out} rows; give --validation-table or another --validation-fraction"
            )
    else:
        val_version = int(open_table(cfg.validation_table).version())
        check_seen_labels(
            check_source(columns, cfg.validation_table, val_version).column(cfg.label),
            classes,
            f"validation table {cfg.validation_table}@v{val_version}",
            f"{cfg.table}@v{version}",
        )
    values_version = None
    if cfg.values_table is not None and (cfg.values_table / "_delta_log").exists():
        values_version = int(open_table(cfg.values_table).version())
    run = PinnedRun.pin(cfg, version, val_version, values_version)
    new_rows = len(unvalued_keys(cfg.table, version, cfg.key, valued=run.valued, data=data))
    return Detection(run, data.num_rows, new_rows)


def embed(run: PinnedRun, engine: Engine) -> int:
    """Embed the rows of the pinned source (and validation) version that lack an embedding.

    Returns:
        Rows embedded (0 with ``embedding_col``, or when every row already has one).
    """
    embedder, target = run.embedder, run.embeddings_table()
    if embedder is None or target is None:
        return 0
    cfg = run.config
    count = engine.embed(cfg, cfg.table, run.table_version, embedder, target)
    fault_point("embedded")
    validation = run.embeddings_table(validation=True)
    if cfg.validation_table is not None and run.validation_version is not None and validation is not None:
        count += engine.embed(cfg, cfg.validation_table, run.validation_version, embedder, validation)
    return count


def _digest(rows: Rows) -> str:
    """A short content digest of the new rows (keys, labels, embeddings), for MLflow's dataset."""
    import hashlib

    h = hashlib.sha256()
    for part in (np.asarray(rows.keys).astype(str), np.asarray(rows.y).astype(str), rows.X):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


def decide(run: PinnedRun, *, run_key: str | None = None) -> RunRef:
    """Choose the mode; for refit and incremental runs open the parent MLflow run.

    An incremental run saves the registered model (alias ``current``) to its workspace, so
    the propagation reads it from there. ``run_key`` (Airflow's DAG run id) makes a retried
    call return the parent run it opened before. A run without one records its process
    (``ecoval.owner``); parent runs of the table whose process is gone are closed KILLED first
    and their workspace removed.
    """
    cfg, version = run.config, run.table_version
    new = _rows(run, only_new=True)
    tracker = run.tracker
    tracker.check_reachable()
    for stale in tracker.close_stale(str(cfg.table), owner_gone):
        log.warning("closed MLflow run %s of %s as KILLED: the process that opened it is gone", stale, cfg.table)
        run.workspace.remove_run(stale)
    try:
        current = tracker.load_current(cfg.registered_model_name)
    except StateFormatError as e:
        # A model registered by an older method cannot value new rows consistently: refit.
        name = cfg.registered_model_name
        if cfg.refit == "never":
            raise StateFormatError(f"the current model of {name}: {e}; run with --refit auto") from e
        log.warning("the current model of %s cannot be read (%s): refitting", name, e)
        current = None
    mode = decide_mode(cfg.refit, new, current[0] if current else None)
    if mode == "noop":
        return RunRef(run, "noop", None, current[1] if current else None)
    tags = {"ecoval.table": str(cfg.table), "ecoval.mode": mode, "ecoval.table_version_read": str(version)}
    if run.validation_version is not None:
        tags["ecoval.validation_version_read"] = str(run.validation_version)
    if run.embedder_fingerprint is not None:
        tags["ecoval.embedder_fingerprint"] = run.embedder_fingerprint
    if run_key is None:
        # Outside an orchestrator nothing else closes a parent run whose process was killed.
        tags[OWNER_TAG] = process_owner()
    run_id = tracker.start(cfg.loggable(), tags, run_key=run_key)
    tracker.log_source(run_id, str(cfg.table), version, _digest(new))
    if mode == "refit" or current is None:
        return RunRef(run, mode, run_id)
    ws = run.workspace
    with ws.atomic(ws.model(run_id)) as tmp:
        current[0].save(tmp)
    return RunRef(run, mode, run_id, current[1])


def _holdout(run: PinnedRun, rows: Rows) -> NDArray[np.bool_]:
    """The rows of the training table held out for validation (none with a validation table)."""
    if run.config.validation_table is None:
        return holdout_mask(rows.keys, run.config.validation_fraction)
    return np.zeros(len(rows.keys), bool)


def _validation(
    run: PinnedRun, rows: Rows, holdout: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.generic]]:
    """The validation rows: the held-out rows, or the pinned version of the validation table."""
    cfg = run.config
    if cfg.validation_table is None:
        return rows.X[holdout], rows.y[holdout]
    val = read_rows(
        run.columns,
        cfg.validation_table,
        embeddings=run.embeddings_table(validation=True),
        version=run.validation_version,
    )
    return val.X, val.y


def cluster(ref: RunRef, engine: Engine) -> list[int]:
    """Stage 0 of a refit: fit the feature space, cluster, save the training plan.

    Returns:
        The shard indices of the LCO trainings (``shards`` groups at most).
    """
    from ecoval_ops.valuation import TrainingPlan

    run = ref.run
    ws = run.workspace
    target = ws.plan(ref.started())
    if not target.exists():
        rows = _rows(run)
        holdout = _holdout(run, rows)
        X_val, y_val = _validation(run, rows, holdout)
        train = ~holdout
        if not train.any():
            raise InvalidInputError(f"every row of {run.config.table} is held out; lower validation_fraction")
        plan = run.estimator(engine.clusterer(int(train.sum()))).prepare(rows.X[train], rows.y[train], X_val, y_val)
        with ws.atomic(target) as tmp:
            plan.save(tmp)
    return list(range(len(TrainingPlan.load(target).shards(run.config.shards))))


def train_shard(ref: RunRef, index: int) -> None:
    """Run the trainings of shard ``index`` and log them as a child run of the parent.

    A shard whose utilities are saved is not trained again (a retried task reuses them).
    """
    from ecoval_ops.tracking import Shard
    from ecoval_ops.valuation import TrainingPlan

    run_id, run = ref.started(), ref.run
    ws = run.workspace
    target = ws.shard(run_id, index)
    if target.exists():
        return
    plan = TrainingPlan.load(ws.plan(run_id))
    shards = plan.shards(run.config.shards)
    if not 0 <= index < len(shards):
        raise InvalidInputError(f"shard {index} does not exist; the plan has {len(shards)} shards")
    utilities = run.estimator().train_masks(plan, shards[index])
    run.tracker.log_shard(
        run_id,
        Shard(
            f"shard-{index}",
            tuple(plan.left_out(i) for i in shards[index]),
            tuple(float(u) for u in utilities.mean(axis=1)),
        ),
    )
    with ws.atomic(target) as tmp, open(tmp, "wb") as f:
        np.save(f, utilities, allow_pickle=False)
    fault_point("shard_trained")


def fit_model(ref: RunRef) -> RunRef:
    """Fit the production function from every shard, propagate in sample, register the model.

    Returns:
        ``ref`` with the registered model version (alias ``current``).

    Raises:
        EcovalError: a shard has no saved utilities.
    """
    from ecoval_ops.valuation import EcoVal, TrainingPlan

    run_id, run = ref.started(), ref.run
    cfg, ws = run.config, run.workspace
    plan = TrainingPlan.load(ws.plan(run_id))
    shards = plan.shards(cfg.shards)
    missing = [i for i in range(len(shards)) if not ws.shard(run_id, i).exists()]
    if missing:
        raise EcovalError(f"shards {missing} of run {run_id} have not finished; run train_shard for them first")
    utilities = np.concatenate([np.load(ws.shard(run_id, i), allow_pickle=False) for i in range(len(shards))])
    curve, member_keys = None, None
    if ws.model(run_id).exists():
        # Saved after registering: a retry finds the version registered before, keys and all.
        ev = EcoVal.load(ws.model(run_id))
    else:
        rows = _rows(run)
        train = ~_holdout(run, rows)
        member_keys = rows.keys[train]
        ev = run.estimator().fit_plan(
            plan, utilities, rows.X[train], rows.y[train], n_trainings=plan.n_trainings(len(shards))
        )
        curve = removal_curve(plan, ev, rows.X[train], rows.y[train], seed=cfg.seed)
    version = run.tracker.register(
        run_id,
        ev,
        model_name=cfg.registered_model_name,
        columns={
            "embedding": run.columns.embedding_columns,
            "is_vector": cfg.embedding_col is not None,
            "label": cfg.label,
        },
        lineage={"table": str(cfg.table), "table_version": str(ref.table_version), "run_id": run_id},
        config=cfg.loggable(),
        member_keys=member_keys,
    )
    if not ws.model(run_id).exists():
        with ws.atomic(ws.model(run_id)) as tmp:
            ev.save(tmp)
            if curve is not None:
                (tmp / REMOVAL_FILE).write_text(json.dumps(curve.to_dict()))
    return RunRef(run, ref.mode, run_id, version)


def _model_version(ref: RunRef) -> str:
    """The model version of the run: in ``ref``, or the one a refit registered from its run."""
    run_id = ref.started()
    version = ref.model_version or ref.run.tracker.registered_version(ref.run.config.registered_model_name, run_id)
    if version is None:
        raise EcovalError(f"run {run_id} has registered no valuation model; fit_model must run first")
    return version


def propagate(ref: RunRef, engine: Engine) -> int:
    """Value the run's rows: in-sample rows from the fit, the others out of sample by the engine.

    A refit values every row of the table (training rows in sample, held-out rows out of
    sample); an incremental run values the rows no run has valued yet.

    Returns:
        Rows valued.
    """
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from ecoval_ops.lakehouse.columns import value_columns
    from ecoval_ops.valuation import EcoVal

    run_id, run = ref.started(), ref.run
    cfg = run.config
    version = _model_version(ref)
    ws = run.workspace
    target = ws.values(run_id)
    if not target.exists():
        rows = _rows(run, only_new=ref.mode == "incremental")
        with ws.atomic(target) as tmp:
            tmp.mkdir()
            if ref.mode == "refit":
                ev = EcoVal.load(ws.model(run_id))
                select = _holdout(run, rows)
                in_sample = value_columns(
                    rows.keys[~select],
                    ev.result_,
                    key=cfg.key,
                    reference=ev.values_,
                    run_id=run_id,
                    model_version=version,
                )
                pq.write_table(in_sample, tmp / "in_sample.parquet")
            else:
                select = ~rows.valued
            if select.any():
                engine.value_out_of_sample(
                    cfg, rows, select, ws.model(run_id), tmp / "out_of_sample", run_id=run_id, model_version=version
                )
    return int(ds.dataset(target, format="parquet").count_rows())


def write(ref: RunRef, engine: Engine) -> int | None:
    """One MERGE of the run's values into the source table; None when it had committed before."""
    run_id = ref.started()
    written = engine.write_values(
        ref.run.config, ref.run.workspace.values(run_id), run_id=run_id, source_version=ref.table_version
    )
    fault_point("merged")
    return written


def report(ref: RunRef, written: int | None, extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Log the run's metrics, tags and review artifacts, close the parent run FINISHED, drop its workspace.

    The review artifacts (:mod:`ecoval_ops.tracking.review`) go under ``review/`` of the parent
    run; a clipped Gamma sets the tag ``ecoval.warning``.

    The night's figures of :mod:`.monitoring` are logged as ``night_*`` metrics; an alert sets
    the tag ``ecoval.alert``. The review carries ``trend.png``, the table's last 30 runs.

    Returns:
        The figures of the run (rows by mode, suspect share, production-function metrics, the
        night's figures and its alert, None when there is none).
    """
    import pyarrow.dataset as ds

    from ecoval_ops.valuation import EcoVal

    run_id, run = ref.started(), ref.run
    ws = run.workspace
    values = ds.dataset(ws.values(run_id), format="parquet").to_table().to_pandas()
    figures = publish(
        run,
        run_id,
        values,
        EcoVal.load(ws.model(run_id)),
        curve=saved_curve(ws.model(run_id) / REMOVAL_FILE) if ref.mode == "refit" else None,
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
