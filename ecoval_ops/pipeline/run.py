"""One valuation run over a Delta table (architecture.md, "Data flow of one nightly run").

detect -> decide (refit or incremental) -> value -> write (one MERGE) -> report. This module
runs the steps in-process for the delta-rs engine; each step is a plain function over
references so that the CLI and (later) the Airflow tasks call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.lakehouse import ensure_value_columns, merge_values, open_table
from ecoval_ops.lakehouse.split import holdout_mask
from ecoval_ops.tracking import Shard, ValuationTracker

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.valuation import EcoVal, ValuationResult

__all__ = ["REFIT_SHARE", "Rows", "RunSummary", "decide_mode", "read_rows", "run_valuation"]

REFIT_SHARE = 0.25
"""``refit=auto`` refits when new rows exceed this share of the valued rows."""
DRIFT_LIMIT = 0.2
"""``refit=auto`` refits when the new rows' cluster shares differ from the training shares by
more than this total-variation distance."""

Mode = Literal["refit", "incremental", "noop"]


@dataclass(frozen=True)
class Rows:
    """The rows of a table version that a run needs, validated.

    Attributes:
        version: the table version read.
        keys: ``(n,)`` row keys.
        X: ``(n, d)`` float features.
        y: ``(n,)`` labels.
        valued: ``(n,)`` whether a run already valued the row.
    """

    version: int
    keys: NDArray[np.generic]
    X: NDArray[np.float64]
    y: NDArray[np.generic]
    valued: NDArray[np.bool_]


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the CLI's summary and for tests."""

    mode: Mode
    run_id: str | None
    rows_valued: int
    rows_in_sample: int
    rows_out_of_sample: int
    suspect_share: float
    model_version: str | None
    table_version_read: int
    table_version_written: int | None
    n_trainings: int
    metrics: dict[str, float] = field(default_factory=dict)


def read_rows(cfg: RunConfig, path: str | None = None) -> Rows:
    """Read and validate key, label and feature columns of the table's latest version.

    Raises:
        InvalidInputError: a missing column, nulls, duplicate keys, non-finite features or an
            empty table, each naming the column and the table version.
    """
    import pyarrow.compute as pc

    table = open_table(path or cfg.table)
    version = int(table.version())
    name = f"{path or cfg.table}@v{version}"
    if cfg.features is None:
        raise EcovalError("only the features embedder is wired into `ecoval run` so far; pass --features")
    schema_names = set(table.schema().to_arrow().names)
    wanted = [cfg.key, cfg.label, *cfg.features]
    missing = [c for c in wanted if c not in schema_names]
    if missing:
        raise InvalidInputError(f"{name} has no column(s) {missing}; it has {sorted(schema_names)}")
    extra = ["ecoval_run_id"] if "ecoval_run_id" in schema_names else []
    data = table.to_pyarrow_table(columns=wanted + extra)
    if data.num_rows == 0:
        raise InvalidInputError(f"{name} is empty: there are no rows to value")
    for column in wanted:
        nulls = data.column(column).null_count
        if nulls:
            raise InvalidInputError(f"column {column!r} of {name} has {nulls} null values")
    keys = data.column(cfg.key)
    if pc.count_distinct(keys).as_py() != data.num_rows:
        raise InvalidInputError(
            f"key column {cfg.key!r} of {name} has {data.num_rows - pc.count_distinct(keys).as_py()} duplicate keys"
        )
    try:
        X = np.column_stack([data.column(c).to_numpy().astype(np.float64) for c in cfg.features])
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"feature columns {list(cfg.features)} of {name} must be numeric: {e}") from e
    bad = ~np.isfinite(X)
    if bad.any():
        column = cfg.features[int(np.flatnonzero(bad.any(axis=0))[0])]
        raise InvalidInputError(f"feature column {column!r} of {name} has {int(bad.sum())} NaN or infinite values")
    valued = data.column("ecoval_run_id").is_valid().to_numpy(zero_copy_only=False) if extra else np.zeros(len(X), bool)
    return Rows(
        version=version,
        keys=keys.to_numpy(zero_copy_only=False),
        X=X,
        y=data.column(cfg.label).to_numpy(zero_copy_only=False),
        valued=np.asarray(valued, dtype=bool),
    )


def decide_mode(cfg: RunConfig, rows: Rows, current: EcoVal | None) -> Mode:
    """Refit or value new rows incrementally (``--refit auto|always|never``).

    ``auto`` refits when there is no registered model, when new rows exceed
    :data:`REFIT_SHARE` of the valued rows, or when their cluster shares drift by more than
    :data:`DRIFT_LIMIT` (total variation) from the training shares.
    """
    new = ~rows.valued
    if cfg.refit == "always":
        return "refit"
    if not new.any():
        return "noop"
    if cfg.refit == "never":
        if current is None:
            raise InvalidInputError("refit=never but no valuation model is registered yet; run with --refit auto")
        return "incremental"
    if current is None or new.sum() > REFIT_SHARE * max(1, rows.valued.sum()):
        return "refit"
    assigned = current.cluster_model_.assign(current.feature_space_.cluster_space(rows.X[new]))
    p = current.n_clusters_
    new_share = np.bincount(assigned, minlength=p) / assigned.size
    train_share = np.bincount(current.clusters_, minlength=p) / current.clusters_.size
    return "refit" if 0.5 * np.abs(new_share - train_share).sum() > DRIFT_LIMIT else "incremental"


def _shards(ev: EcoVal) -> list[Shard]:
    u = ev.utilities_
    p = u.lco.shape[0]
    shards = [Shard("base", ("none", "half"), (float(u.full.mean()), float(u.half.mean())))]
    for c in range(p):
        left = [str(c)] + [f"{c},{d}" for d in range(c + 1, p) if u.pair is not None]
        utilities = [float(u.lco[c].mean())] + [
            float(u.pair[c, d].mean()) for d in range(c + 1, p) if u.pair is not None
        ]
        shards.append(Shard(f"lco-{c}", tuple(left), tuple(utilities)))
    return shards


def _columns(
    keys: NDArray[np.generic],
    result: ValuationResult,
    reference: NDArray[np.float64],
    key: str,
    run_id: str,
    version: str,
) -> pa.Table:
    """The value columns of valued rows.

    The percentile is the row's rank among the model's in-sample values, so rows valued on
    different nights stay comparable without rewriting the rows valued before.
    """
    import pyarrow as pa

    table = result.to_arrow(keys, key)
    n = table.num_rows
    percentile = np.searchsorted(np.sort(reference), result.values, side="right") / reference.size
    now = datetime.now(UTC)
    return (
        table.append_column("ecoval_percentile", pa.array(percentile, pa.float64()))
        .append_column("ecoval_run_id", pa.array([run_id] * n, pa.string()))
        .append_column("ecoval_model_version", pa.array([version] * n, pa.string()))
        .append_column("ecoval_valued_at", pa.array([now] * n, pa.timestamp("us", tz="UTC")))
    )


def run_valuation(cfg: RunConfig) -> RunSummary:
    """Run one valuation of ``cfg.table`` end to end with the delta-rs engine.

    Raises:
        InvalidInputError: bad input; the table is left as it was.
        EcovalError: an engine or tracking failure; the parent run is marked FAILED.
    """
    import pyarrow as pa

    from ecoval_ops.valuation import EcoVal

    if cfg.engine != "delta-rs":
        raise EcovalError("the Spark engine is not wired into `ecoval run` yet; use --engine delta-rs")
    rows = read_rows(cfg)
    tracker = ValuationTracker(cfg.tracking_uri, cfg.experiment)
    current = tracker.load_current(cfg.registered_model_name)
    mode = decide_mode(cfg, rows, current[0] if current else None)
    if mode == "noop":
        return RunSummary("noop", None, 0, 0, 0, 0.0, current[1] if current else None, rows.version, None, 0)
    run_id = tracker.start(
        cfg.loggable(),
        {"ecoval.table": str(cfg.table), "ecoval.mode": mode, "ecoval.table_version_read": str(rows.version)},
    )
    try:
        if mode == "refit":
            if cfg.validation_table is not None:
                val = read_rows(cfg, str(cfg.validation_table))
                holdout = np.zeros(len(rows.keys), bool)
                X_val, y_val = val.X, val.y
            else:
                holdout = holdout_mask(rows.keys, cfg.validation_fraction)
                X_val, y_val = rows.X[holdout], rows.y[holdout]
            ev = EcoVal(n_clusters=cfg.clusters, budget=cfg.budget, seed=cfg.seed).fit(
                rows.X[~holdout], rows.y[~holdout], X_val, y_val
            )
            tracker.log_shards(run_id, _shards(ev))
            version = tracker.register(
                run_id,
                ev,
                model_name=cfg.registered_model_name,
                columns={"features": list(cfg.features or ()), "label": cfg.label},
            )
            parts = [_columns(rows.keys[~holdout], ev.result_, ev.values_, cfg.key, run_id, version)]
            if holdout.any():
                oos = ev.value_rows(rows.X[holdout], rows.y[holdout])
                parts.append(_columns(rows.keys[holdout], oos, ev.values_, cfg.key, run_id, version))
            trainings = ev.n_trainings_
        else:
            assert current is not None
            ev, version = current
            new = ~rows.valued
            oos = ev.value_rows(rows.X[new], rows.y[new])
            parts = [_columns(rows.keys[new], oos, ev.values_, cfg.key, run_id, version)]
            trainings = 0
        values = pa.concat_tables(parts)
        ensure_value_columns(cfg.table)
        written = merge_values(cfg.table, values, key=cfg.key, run_id=run_id, source_version=rows.version)
        modes = values.column("ecoval_mode").to_pylist()
        summary = RunSummary(
            mode=mode,
            run_id=run_id,
            rows_valued=values.num_rows,
            rows_in_sample=modes.count("in_sample"),
            rows_out_of_sample=modes.count("out_of_sample"),
            suspect_share=float(np.mean(values.column("ecoval_suspect").to_numpy(zero_copy_only=False))),
            model_version=version,
            table_version_read=rows.version,
            table_version_written=written,
            n_trainings=trainings,
            metrics={
                "U_B": ev.game_.utility_full,
                "U_empty": ev.game_.utility_empty,
                "Gamma_alpha": ev.gamma_alpha_,
                "Gamma_beta": ev.gamma_beta_,
                "gamma": ev.returns_to_scale_,
                "p": float(ev.n_clusters_),
            },
        )
        tracker.log_metrics(
            run_id,
            {
                **summary.metrics,
                "trainings": float(trainings),
                "rows_in_sample": float(summary.rows_in_sample),
                "rows_out_of_sample": float(summary.rows_out_of_sample),
                "suspect_share": summary.suspect_share,
            },
        )
        tracker.set_tags(run_id, {"ecoval.table_version_written": str(written), "ecoval.model_version": version})
        tracker.finish(run_id)
        return summary
    except BaseException:
        tracker.finish(run_id, failed=True)
        raise
