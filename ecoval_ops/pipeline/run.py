"""One valuation run over a Delta table (architecture.md, "Data flow of one nightly run").

detect -> decide (refit or incremental) -> value -> write (one MERGE) -> report, with either
engine of :mod:`ecoval_ops.pipeline.engines`; the CLI and (later) the Airflow tasks call the
same functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse.split import holdout_mask
from ecoval_ops.pipeline.engines import Engine, Rows, embedding_columns, engine_for
from ecoval_ops.tracking import Shard, ValuationTracker

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.valuation import EcoVal, ValuationResult

__all__ = ["DRIFT_LIMIT", "REFIT_SHARE", "RunSummary", "decide_mode", "run_valuation"]

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
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)


class _Stages:
    """Wall time of each stage, and the process's peak resident memory when it ended.

    The peak is the Python process's (``ru_maxrss``, never decreasing); Spark's JVM is a
    separate process and is not included.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        import resource

        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.peak_rss_mb[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def decide_mode(cfg: RunConfig, rows: Rows, current: EcoVal | None) -> Mode:
    """Refit or value new rows incrementally (``--refit auto|always|never``).

    ``auto`` refits when there is no registered model, when new rows exceed
    :data:`REFIT_SHARE` of the valued rows, or when their cluster shares drift by more than
    :data:`DRIFT_LIMIT` (total variation) from the training shares, tested once there are
    :data:`DRIFT_MIN_ROWS_PER_CLUSTER` new rows per cluster.
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
    p = current.n_clusters_
    if new.sum() < DRIFT_MIN_ROWS_PER_CLUSTER * p:
        return "incremental"
    assigned = current.cluster_model_.assign(current.feature_space_.cluster_space(rows.X[new]))
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


def _digest(rows: Rows) -> str:
    """A short content digest of the rows read (keys, labels, features), for MLflow's dataset."""
    import hashlib

    h = hashlib.sha256()
    for part in (np.asarray(rows.keys).astype(str), np.asarray(rows.y).astype(str), rows.X):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


def run_valuation(cfg: RunConfig, engine: Engine | None = None) -> RunSummary:
    """Run one valuation of ``cfg.table`` end to end.

    Args:
        cfg: the run configuration.
        engine: the engine; default the one ``cfg.engine`` names.

    Raises:
        InvalidInputError: bad input; the table is left as it was.
        EcovalError: an engine or tracking failure; the parent run is marked FAILED.
    """
    import pyarrow as pa

    from ecoval_ops.valuation import EcoVal

    engine = engine or engine_for(cfg)
    stages = _Stages()
    with stages("read"):
        rows = engine.read_rows(cfg)
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
        tracker.log_source(run_id, str(cfg.table), rows.version, _digest(rows))
        if mode == "refit":
            if cfg.validation_table is not None:
                val = engine.read_rows(cfg, str(cfg.validation_table))
                holdout = np.zeros(len(rows.keys), bool)
                X_val, y_val = val.X, val.y
            else:
                holdout = holdout_mask(rows.keys, cfg.validation_fraction)
                X_val, y_val = rows.X[holdout], rows.y[holdout]
            with stages("fit"):
                ev = EcoVal(
                    n_clusters=cfg.clusters,
                    budget=cfg.budget,
                    seed=cfg.seed,
                    clusterer=engine.clusterer(int((~holdout).sum())),
                ).fit(rows.X[~holdout], rows.y[~holdout], X_val, y_val)
            with stages("register"):
                tracker.log_shards(run_id, _shards(ev))
                version = tracker.register(
                    run_id,
                    ev,
                    model_name=cfg.registered_model_name,
                    columns={
                        "embedding": embedding_columns(cfg),
                        "is_vector": cfg.embedding_col is not None,
                        "label": cfg.label,
                    },
                )
            with stages("value"):
                parts = [_columns(rows.keys[~holdout], ev.result_, ev.values_, cfg.key, run_id, version)]
                if holdout.any():
                    oos = ev.value_rows(rows.X[holdout], rows.y[holdout])
                    parts.append(_columns(rows.keys[holdout], oos, ev.values_, cfg.key, run_id, version))
            trainings = ev.n_trainings_
        else:
            assert current is not None
            ev, version = current
            new = ~rows.valued
            with stages("value"):
                oos = ev.value_rows(rows.X[new], rows.y[new])
                parts = [_columns(rows.keys[new], oos, ev.values_, cfg.key, run_id, version)]
            trainings = 0
        values = pa.concat_tables(parts)
        with stages("write"):
            written = engine.write_values(cfg, values, run_id=run_id, source_version=rows.version)
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
            stage_seconds=dict(stages.seconds),
            stage_peak_rss_mb=dict(stages.peak_rss_mb),
        )
        tracker.log_metrics(
            run_id,
            {
                **summary.metrics,
                "trainings": float(trainings),
                "rows_in_sample": float(summary.rows_in_sample),
                "rows_out_of_sample": float(summary.rows_out_of_sample),
                "suspect_share": summary.suspect_share,
                **{f"seconds_{k}": v for k, v in stages.seconds.items()},
                **{f"peak_rss_mb_{k}": v for k, v in stages.peak_rss_mb.items()},
            },
        )
        tracker.set_tags(run_id, {"ecoval.table_version_written": str(written), "ecoval.model_version": version})
        tracker.finish(run_id)
        return summary
    except BaseException:
        tracker.finish(run_id, failed=True)
        raise
