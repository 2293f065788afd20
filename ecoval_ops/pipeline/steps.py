"""The steps of one valuation run, as plain functions over references (architecture.md).

detect -> embed -> decide -> [refit: cluster -> train_shard x N -> fit_model] -> propagate ->
write -> report. ``ecoval run`` calls them in turn in one process; the Airflow DAG calls each
from its own task and passes the :class:`RunRef` (table version, run id, model version), never
data: what a step leaves for the next lies in the table's :class:`Workspace` or in MLflow.

Every step can be retried: a finished shard, plan, model or values file is reused, the
embeddings append and the MERGE are idempotent Delta transactions, and registering the model
again for the same run returns the version registered before.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.lakehouse import open_table
from ecoval_ops.lakehouse.embedders import embedder_for
from ecoval_ops.lakehouse.split import holdout_mask
from ecoval_ops.pipeline.engines import Engine, Rows, check_source, embedding_columns, read_rows
from ecoval_ops.pipeline.workspace import Workspace
from ecoval_ops.process import fault_point
from ecoval_ops.tracking import Shard, ValuationTracker

if TYPE_CHECKING:
    from ecoval_ops.valuation import EcoVal, TrainingPlan
    from ecoval_ops.valuation.protocols import Clusterer
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = [
    "DRIFT_LIMIT",
    "DRIFT_MIN_ROWS_PER_CLUSTER",
    "REFIT_SHARE",
    "Detection",
    "Mode",
    "RunRef",
    "cluster",
    "decide",
    "decide_mode",
    "detect",
    "embed",
    "embeddings_table",
    "fail",
    "fit_model",
    "propagate",
    "report",
    "train_shard",
    "write",
]

REFIT_SHARE = 0.25
"""``refit=auto`` refits when new rows exceed this share of the valued rows."""
DRIFT_LIMIT = 0.2
"""``refit=auto`` refits when the new rows' cluster shares differ from the training shares by
more than this total-variation distance."""
DRIFT_MIN_ROWS_PER_CLUSTER = 10
"""The drift test needs this many new rows per cluster: with fewer, sampling noise alone moves
the shares past :data:`DRIFT_LIMIT` and every small nightly batch would refit."""

Mode = Literal["refit", "incremental", "noop"]


@dataclass(frozen=True)
class RunRef:
    """What a step hands the next: references only, JSON-able (Airflow XCom).

    Attributes:
        table_version: the source version the run values (pinned at detect).
        mode: ``refit``, ``incremental`` or ``noop``.
        run_id: the parent MLflow run (None for a no-op).
        model_version: the registered valuation model the values come from.
    """

    table_version: int
    mode: Mode
    run_id: str | None = None
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The reference as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRef:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def started(self) -> str:
        """The run id, for steps that need an open run."""
        if self.run_id is None:
            raise EcovalError(f"a {self.mode} run has no MLflow run; decide() opens one for refit and incremental runs")
        return self.run_id


def _tracker(cfg: RunConfig) -> ValuationTracker:
    return ValuationTracker(cfg.tracking_uri, cfg.experiment)


def _estimator(cfg: RunConfig, clusterer: Clusterer | None = None) -> EcoVal:
    from ecoval_ops.valuation import EcoVal

    return EcoVal(n_clusters=cfg.clusters, budget=cfg.budget, seed=cfg.seed, clusterer=clusterer)


def embeddings_table(cfg: RunConfig, *, validation: bool = False) -> Path | None:
    """The embeddings table of the run's embedder; None when the table holds embeddings."""
    embedder = embedder_for(cfg)
    if embedder is None:
        return None
    return Workspace.for_config(cfg).embeddings(embedder.fingerprint(), validation=validation)


def _rows(cfg: RunConfig, version: int, *, only_new: bool = False) -> Rows:
    return read_rows(cfg, embeddings=embeddings_table(cfg), version=version, only_new=only_new)


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found.

    Attributes:
        table_version: the source version the run will value.
        rows: rows in that version.
        new_rows: rows no run has valued yet.
    """

    table_version: int
    rows: int
    new_rows: int


def detect(cfg: RunConfig) -> Detection:
    """Pin the source version of the run, check its columns, keys and labels, count new rows.

    Raises:
        InvalidInputError: not a Delta table, missing columns, an empty table, null keys or
            labels, duplicate keys, a single class, validation labels unseen in the table.
    """
    import pyarrow.compute as pc

    version = int(open_table(cfg.table).version())
    data = check_source(cfg, cfg.table, version)
    classes = pc.unique(data.column(cfg.label))
    if len(classes) < 2:
        raise InvalidInputError(
            f"label column {cfg.label!r} of {cfg.table}@v{version} has a single class ({classes[0].as_py()!r}); "
            "valuation needs at least 2"
        )
    if cfg.validation_table is None:
        held_out = int(holdout_mask(data.column(cfg.key).to_pylist(), cfg.validation_fraction).sum())
        if held_out in (0, data.num_rows):
            raise InvalidInputError(
                f"validation fraction {cfg.validation_fraction} of the {data.num_rows} rows of {cfg.table}@v{version} "
                f"holds out {held_out} rows; give --validation-table or another --validation-fraction"
            )
    else:
        val_version = int(open_table(cfg.validation_table).version())
        val = check_source(cfg, cfg.validation_table, val_version).column(cfg.label)
        unseen = pc.filter(val, pc.invert(pc.is_in(val, value_set=classes)))
        if len(unseen):
            shown = sorted({v.as_py() for v in unseen}, key=str)[:5]
            raise InvalidInputError(
                f"validation table {cfg.validation_table}@v{val_version} has {len(unseen)} rows with labels not in "
                f"{cfg.table}@v{version}: {shown}"
            )
    new_rows = data.num_rows
    if "ecoval_run_id" in data.column_names:
        new_rows = int(data.column("ecoval_run_id").null_count)
    return Detection(version, data.num_rows, new_rows)


def embed(cfg: RunConfig, version: int, engine: Engine) -> int:
    """Embed the rows of ``cfg.table@version`` (and of the validation table) that lack an embedding.

    Returns:
        Rows embedded (0 with ``embedding_col``, or when every row already has one).
    """
    embedder = embedder_for(cfg)
    target = embeddings_table(cfg)
    if embedder is None or target is None:
        return 0
    count = engine.embed(cfg, cfg.table, version, embedder, target)
    fault_point("embedded")
    validation = embeddings_table(cfg, validation=True)
    if cfg.validation_table is not None and validation is not None:
        val_version = int(open_table(cfg.validation_table).version())
        count += engine.embed(cfg, cfg.validation_table, val_version, embedder, validation)
    return count


def decide_mode(cfg: RunConfig, new: Rows, current: EcoVal | None) -> Mode:
    """Refit or value new rows incrementally (``--refit auto|always|never``).

    Args:
        cfg: the run configuration.
        new: the rows no run has valued yet (``new.table_rows`` counts the whole version).
        current: the registered valuation model, if any.

    ``auto`` refits when there is no registered model, when new rows exceed
    :data:`REFIT_SHARE` of the valued rows, or when their cluster shares drift by more than
    :data:`DRIFT_LIMIT` (total variation) from the training shares, tested once there are
    :data:`DRIFT_MIN_ROWS_PER_CLUSTER` new rows per cluster.
    """
    n_new = len(new.keys)
    if cfg.refit == "always":
        return "refit"
    if n_new == 0:
        return "noop"
    if cfg.refit == "never":
        if current is None:
            raise InvalidInputError("refit=never but no valuation model is registered yet; run with --refit auto")
        return "incremental"
    if current is None or n_new > REFIT_SHARE * max(1, new.table_rows - n_new):
        return "refit"
    p = current.n_clusters_
    if n_new < DRIFT_MIN_ROWS_PER_CLUSTER * p:
        return "incremental"
    assigned = current.cluster_model_.assign(current.feature_space_.cluster_space(new.X))
    new_share = np.bincount(assigned, minlength=p) / assigned.size
    train_share = np.bincount(current.clusters_, minlength=p) / current.clusters_.size
    return "refit" if 0.5 * np.abs(new_share - train_share).sum() > DRIFT_LIMIT else "incremental"


def _digest(rows: Rows) -> str:
    """A short content digest of the new rows (keys, labels, embeddings), for MLflow's dataset."""
    import hashlib

    h = hashlib.sha256()
    for part in (np.asarray(rows.keys).astype(str), np.asarray(rows.y).astype(str), rows.X):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


def decide(cfg: RunConfig, version: int, *, run_key: str | None = None) -> RunRef:
    """Choose the mode; for refit and incremental runs open the parent MLflow run.

    An incremental run saves the registered model (alias ``current``) to its workspace, so
    the propagation reads it from there. ``run_key`` (Airflow's DAG run id) makes a retried
    call return the parent run it opened before.
    """
    new = _rows(cfg, version, only_new=True)
    tracker = _tracker(cfg)
    tracker.check_reachable()
    current = tracker.load_current(cfg.registered_model_name)
    mode = decide_mode(cfg, new, current[0] if current else None)
    if mode == "noop":
        return RunRef(version, "noop", None, current[1] if current else None)
    run_id = tracker.start(
        cfg.loggable(),
        {"ecoval.table": str(cfg.table), "ecoval.mode": mode, "ecoval.table_version_read": str(version)},
        run_key=run_key,
    )
    tracker.log_source(run_id, str(cfg.table), version, _digest(new))
    if mode == "refit" or current is None:
        return RunRef(version, mode, run_id)
    ws = Workspace.for_config(cfg)
    with ws.atomic(ws.model(run_id)) as tmp:
        current[0].save(tmp)
    return RunRef(version, mode, run_id, current[1])


def _split(cfg: RunConfig, rows: Rows) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.generic]]:
    """The hold-out mask of the training table and the validation rows."""
    if cfg.validation_table is None:
        holdout = holdout_mask(rows.keys, cfg.validation_fraction)
        return holdout, rows.X[holdout], rows.y[holdout]
    val = read_rows(cfg, embeddings=embeddings_table(cfg, validation=True), path=cfg.validation_table)
    return np.zeros(len(rows.keys), bool), val.X, val.y


def cluster(cfg: RunConfig, ref: RunRef, engine: Engine) -> list[int]:
    """Stage 0 of a refit: fit the feature space, cluster, save the training plan.

    Returns:
        The shard indices of the LCO trainings (``cfg.shards`` groups at most).
    """
    from ecoval_ops.valuation import TrainingPlan

    ws = Workspace.for_config(cfg)
    target = ws.plan(ref.started())
    if not target.exists():
        rows = _rows(cfg, ref.table_version)
        holdout, X_val, y_val = _split(cfg, rows)
        train = ~holdout
        if not train.any():
            raise InvalidInputError(f"every row of {cfg.table} is held out; lower validation_fraction")
        plan = _estimator(cfg, engine.clusterer(int(train.sum()))).prepare(rows.X[train], rows.y[train], X_val, y_val)
        with ws.atomic(target) as tmp:
            plan.save(tmp)
    return list(range(len(TrainingPlan.load(target).shards(cfg.shards))))


def train_shard(cfg: RunConfig, ref: RunRef, index: int) -> None:
    """Run the trainings of shard ``index`` and log them as a child run of the parent.

    A shard whose utilities are saved is not trained again (a retried task reuses them).
    """
    from ecoval_ops.valuation import TrainingPlan

    run_id = ref.started()
    ws = Workspace.for_config(cfg)
    target = ws.shard(run_id, index)
    if target.exists():
        return
    plan = TrainingPlan.load(ws.plan(run_id))
    shards = plan.shards(cfg.shards)
    if not 0 <= index < len(shards):
        raise InvalidInputError(f"shard {index} does not exist; the plan has {len(shards)} shards")
    utilities = _estimator(cfg).train_masks(plan, shards[index])
    _tracker(cfg).log_shard(
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


def fit_model(cfg: RunConfig, ref: RunRef) -> RunRef:
    """Fit the production function from every shard, propagate in sample, register the model.

    Returns:
        ``ref`` with the registered model version (alias ``current``).

    Raises:
        EcovalError: a shard has no saved utilities.
    """
    from ecoval_ops.valuation import EcoVal, TrainingPlan

    run_id = ref.started()
    ws = Workspace.for_config(cfg)
    plan = TrainingPlan.load(ws.plan(run_id))
    shards = plan.shards(cfg.shards)
    missing = [i for i in range(len(shards)) if not ws.shard(run_id, i).exists()]
    if missing:
        raise EcovalError(f"shards {missing} of run {run_id} have not finished; run train_shard for them first")
    utilities = np.concatenate([np.load(ws.shard(run_id, i), allow_pickle=False) for i in range(len(shards))])
    curve = None
    if ws.model(run_id).exists():
        ev = EcoVal.load(ws.model(run_id))
    else:
        rows = _rows(cfg, ref.table_version)
        train = ~_split(cfg, rows)[0]
        ev = _estimator(cfg).fit_plan(
            plan, utilities, rows.X[train], rows.y[train], n_trainings=plan.n_trainings(len(shards))
        )
        curve = _removal_curve(cfg, plan, ev, rows.X[train], rows.y[train])
    version = _tracker(cfg).register(
        run_id,
        ev,
        model_name=cfg.registered_model_name,
        columns={
            "embedding": embedding_columns(cfg),
            "is_vector": cfg.embedding_col is not None,
            "label": cfg.label,
        },
        lineage={"table": str(cfg.table), "table_version": str(ref.table_version), "run_id": run_id},
        config=cfg.loggable(),
    )
    if not ws.model(run_id).exists():
        with ws.atomic(ws.model(run_id)) as tmp:
            ev.save(tmp)
            if curve is not None:
                (tmp / REMOVAL_FILE).write_text(json.dumps(curve.to_dict()))
    return RunRef(ref.table_version, ref.mode, run_id, version)


REMOVAL_FILE = "removal_curve.json"
"""The refit's point-removal curve, saved beside the model in the run's workspace."""
REMOVAL_ROWS = 20_000
"""Most training rows the review's removal curve retrains on (a seeded sample beyond that)."""


def _removal_curve(
    cfg: RunConfig, plan: TrainingPlan, ev: EcoVal, X: NDArray[np.float64], y: NDArray[np.generic]
) -> RemovalCurve:
    """Validation accuracy after removing the highest / lowest-valued training rows (for review)."""
    from ecoval_ops.valuation.removal import removal_curve

    rows = np.arange(len(y))
    if rows.size > REMOVAL_ROWS:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows.size, REMOVAL_ROWS, replace=False))
    return removal_curve(
        plan.space.standardise(X[rows]),
        np.searchsorted(ev.classes_, y[rows]),
        ev.values_[rows],
        plan.X_val,
        plan.y_val,
        n_classes=ev.classes_.size,
        seed=cfg.seed,
    )


def _model_version(cfg: RunConfig, ref: RunRef) -> str:
    """The model version of the run: in ``ref``, or the one a refit registered from its run."""
    run_id = ref.started()
    version = ref.model_version or _tracker(cfg).registered_version(cfg.registered_model_name, run_id)
    if version is None:
        raise EcovalError(f"run {run_id} has registered no valuation model; fit_model must run first")
    return version


def propagate(cfg: RunConfig, ref: RunRef, engine: Engine) -> int:
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

    run_id = ref.started()
    version = _model_version(cfg, ref)
    ws = Workspace.for_config(cfg)
    target = ws.values(run_id)
    if not target.exists():
        rows = _rows(cfg, ref.table_version, only_new=ref.mode == "incremental")
        with ws.atomic(target) as tmp:
            tmp.mkdir()
            if ref.mode == "refit":
                ev = EcoVal.load(ws.model(run_id))
                select = _split(cfg, rows)[0]
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


def write(cfg: RunConfig, ref: RunRef, engine: Engine) -> int | None:
    """One MERGE of the run's values into the source table; None when it had committed before."""
    run_id = ref.started()
    written = engine.write_values(
        cfg, Workspace.for_config(cfg).values(run_id), run_id=run_id, source_version=ref.table_version
    )
    fault_point("merged")
    return written


def report(cfg: RunConfig, ref: RunRef, written: int | None, extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Log the run's metrics, tags and review artifacts, close the parent run FINISHED, drop its workspace.

    The review artifacts (:mod:`ecoval_ops.tracking.review`) go under ``review/`` of the parent
    run; a clipped Gamma sets the tag ``ecoval.warning``.

    Returns:
        The figures of the run (rows by mode, suspect share, production-function metrics).
    """
    import pyarrow.dataset as ds

    from ecoval_ops.tracking.review import Diagnostics
    from ecoval_ops.valuation import EcoVal

    run_id = ref.started()
    ws = Workspace.for_config(cfg)
    values = ds.dataset(ws.values(run_id), format="parquet").to_table().to_pandas()
    ev = EcoVal.load(ws.model(run_id))
    diagnostics = Diagnostics.of(ev)
    refit = ref.mode == "refit"
    modes = values["ecoval_mode"]
    figures: dict[str, Any] = {
        "rows_valued": len(values),
        "rows_in_sample": int((modes == "in_sample").sum()),
        "rows_out_of_sample": int((modes == "out_of_sample").sum()),
        "suspect_share": float(values["ecoval_suspect"].mean()) if len(values) else 0.0,
        "n_trainings": int(ev.n_trainings_) if refit else 0,
        "metrics": {
            "U_B": diagnostics.utility_full,
            "U_empty": diagnostics.utility_empty,
            "Gamma_alpha": diagnostics.gamma_alpha,
            "Gamma_beta": diagnostics.gamma_beta,
            "gamma": diagnostics.gamma,
            "p": float(ev.n_clusters_),
        },
    }
    tracker = _tracker(cfg)
    curve = _saved_curve(ws.model(run_id) / REMOVAL_FILE) if refit else None
    tracker.log_metrics(
        run_id,
        {
            **figures["metrics"],
            "trainings": float(figures["n_trainings"]),
            "rows_in_sample": float(figures["rows_in_sample"]),
            "rows_out_of_sample": float(figures["rows_out_of_sample"]),
            "suspect_share": figures["suspect_share"],
            **({"removal_accuracy_full": curve.full, "removal_accuracy_top20": curve.at(0.2)} if curve else {}),
            **(extra or {}),
        },
    )
    _log_review(cfg, run_id, values, ev, curve, diagnostics)
    tracker.set_tags(
        run_id,
        {
            "ecoval.table_version_written": str(written),
            "ecoval.model_version": _model_version(cfg, ref),
            "ecoval.gammas_clipped": str(diagnostics.gammas_clipped).lower(),
            **({"ecoval.warning": diagnostics.warning} if diagnostics.warning else {}),
        },
    )
    tracker.finish(run_id)
    ws.remove_run(run_id)
    return figures


def _saved_curve(path: Path) -> RemovalCurve | None:
    from ecoval_ops.valuation.removal import RemovalCurve

    return RemovalCurve.from_dict(json.loads(path.read_text())) if path.exists() else None


def _log_review(
    cfg: RunConfig,
    run_id: str,
    values: Any,
    ev: EcoVal,
    curve: RemovalCurve | None,
    diagnostics: Any,
) -> None:
    """Write the review artifacts and log them under ``review/`` of the parent run."""
    from ecoval_ops.tracking.review import write_review

    members = (ev.state_.Z, ev.values_, ev.result_.suspect)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "review"
        write_review(folder, values, key=cfg.key, members=members, curve=curve, diagnostics=diagnostics, seed=cfg.seed)
        _tracker(cfg).log_artifacts(run_id, folder, "review")


def fail(cfg: RunConfig, ref: RunRef) -> None:
    """Close the parent run FAILED (its workspace stays for the retry or for inspection)."""
    if ref.run_id is not None:
        _tracker(cfg).finish(ref.run_id, failed=True)
