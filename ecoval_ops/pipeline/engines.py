"""The two engines of a run: who embeds, draws the reference set, values and writes (architecture.md).

Both engines read rows through the same checks (:mod:`ecoval_ops.lakehouse.source`), value with
the same EcoVal code, batch by batch (:mod:`ecoval_ops.lakehouse.row_values`), and write one
MERGE under the same contract (:mod:`ecoval_ops.lakehouse.value_writes`); they differ in where
the work runs:

- :class:`DeltaRsEngine`: in-process with delta-rs, numpy and torch (no JVM): the rows are read
  into numpy, sorted by key;
- :class:`SparkEngine`: every O(n) pass on the executors, over the tables read where they lie
  (:mod:`ecoval_ops.lakehouse.spark_engine`); the driver holds the reference set and small
  per-cluster aggregates (spec section 5b).

Both draw the same reference set (from the key, :func:`~ecoval_ops.valuation.reference.key_draws`)
and cluster it alike below ``mllib_min_rows``, so their values agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.lakehouse import ensure_value_columns, merge_values, open_table
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.delta_rs import create_values_table
from ecoval_ops.lakehouse.embedders import Embedder
from ecoval_ops.lakehouse.embeddings import append_embeddings, embed_app_id, embed_once, new_keys
from ecoval_ops.lakehouse.row_values import input_batch, value_batch, x_sums
from ecoval_ops.process import fault_point
from ecoval_ops.valuation.reference import key_draws, member_index

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from ecoval_ops.lakehouse.spark import SparkSizing
    from ecoval_ops.pipeline.pinned import PinnedRun
    from ecoval_ops.valuation import TrainingPlan

__all__ = ["DeltaRsEngine", "Engine", "SparkEngine", "engine_for", "value_target"]


def value_target(cfg: RunConfig) -> tuple[Path, bool]:
    """The table the values go to, made ready, and whether its MERGE inserts new keys.

    The source table gains the value columns once (a schema change); a separate values table
    (``values_table``) is created with the key and the value columns, and rows are upserted
    into it, so the source is never altered.
    """
    if cfg.values_table is not None:
        create_values_table(cfg.values_table, source=cfg.table, key=cfg.key, label=cfg.label)
        return cfg.values_table, True
    ensure_value_columns(cfg.table, label=cfg.label)
    fault_point("columns_added")
    return cfg.table, False


class Engine(Protocol):
    """Embeds rows, draws the plan's reference set, runs the row passes, writes values."""

    def embed(self, cfg: RunConfig, source: str | Path, version: int, embedder: Embedder, target: Path) -> int:
        """Append embeddings of the rows of ``source@version`` missing from ``target``; rows embedded.

        Idempotent per source version: a retried call commits nothing.
        """
        ...

    def plan(self, run: PinnedRun) -> tuple[TrainingPlan, pa.Array]:
        """Stage 0 and the training plan of a refit on the pinned training rows; the members' keys.

        The keys are in member order, of the key column's own Arrow type.

        Raises:
            InvalidInputError: bad rows, or every row held out.
        """
        ...

    def row_inputs(self, run: PinnedRun, model: Path, out: Path, *, only_new: bool) -> NDArray[np.float64]:
        """Write every row's inputs against the saved ``model`` as Parquet files in ``out`` (first pass).

        A refit's rows are every row of the pinned version (training rows may be members);
        ``only_new`` takes the rows no run has valued, none of them a member.

        Returns:
            ``(p,)`` sums of ``x_i`` over the training rows per cluster (what centres a refit).
        """
        ...

    def values(self, run: PinnedRun, inputs: Path, model: Path, out: Path, *, run_id: str, model_version: str) -> None:
        """Write the value columns of the ``inputs`` against the (centred) ``model`` as Parquet in ``out``."""
        ...

    def write_values(self, cfg: RunConfig, values: Path, *, run_id: str, source_version: int) -> int | None:
        """Add the value columns once, then one idempotent MERGE of the Parquet ``values``; None if done."""
        ...


class DeltaRsEngine:
    """In-process engine: delta-rs reads and writes, numpy/torch compute (no JVM)."""

    def embed(self, cfg: RunConfig, source: str | Path, version: int, embedder: Embedder, target: Path) -> int:
        """See :class:`Engine`."""
        import pyarrow as pa
        from deltalake.exceptions import CommitFailedError

        def append() -> int:
            data = open_table(source, version).to_pyarrow_table(columns=[cfg.key, *embedder.columns])
            todo = new_keys(data, cfg.key, target)
            parts = [
                embedder.embed(batch.to_pandas()) for batch in todo.to_batches(max_chunksize=4096) if batch.num_rows
            ]
            X = np.concatenate(parts) if parts else np.zeros((0, 1))
            embeddings = pa.table(
                {
                    cfg.key: todo.column(cfg.key),
                    EMBEDDING_COL: pa.array(list(X), pa.list_(pa.float64()))
                    if len(X)
                    else pa.array([], pa.list_(pa.float64())),
                }
            )
            append_embeddings(target, embeddings, version)
            return int(todo.num_rows)

        return embed_once(target, version, CommitFailedError, append)

    def plan(self, run: PinnedRun) -> tuple[TrainingPlan, pa.Array]:
        """See :class:`Engine`: :meth:`EcoVal.prepare` on the rows read into numpy."""
        import pyarrow as pa

        rows = run.rows()
        holdout = run.row_source.held_out(rows.keys)
        validation = run.validation_rows()
        X_val, y_val = (rows.X[holdout], rows.y[holdout]) if validation is None else (validation.X, validation.y)
        train = ~holdout
        if not train.any():
            raise InvalidInputError(f"every row of {run.config.table} is held out; lower validation_fraction")
        keys = rows.keys[train]
        draws = key_draws(keys, run.config.seed)
        plan = run.estimator().prepare(rows.X[train], rows.y[train], X_val, y_val, draws=draws)
        members = keys[member_index(plan.reference_draws, draws) >= 0]
        return plan, pa.array(members, type=run.row_source.key_type())

    def row_inputs(self, run: PinnedRun, model: Path, out: Path, *, only_new: bool) -> NDArray[np.float64]:
        """See :class:`Engine`."""
        import pyarrow.parquet as pq

        from ecoval_ops.valuation import EcoVal

        ev = EcoVal.load(model)
        # With only_new the read keeps the rows no run has valued, none of them a training row.
        rows = run.rows(only_new=only_new)
        training = np.zeros(len(rows.keys), bool) if only_new else ~run.row_source.held_out(rows.keys)
        out.mkdir(parents=True, exist_ok=True)
        if not len(rows.keys):
            return np.zeros(ev.n_clusters_)
        inputs = input_batch(ev, rows.keys, rows.X, rows.y, training, key=run.config.key)
        pq.write_table(inputs, out / "part-0.parquet")
        return x_sums(inputs, ev.n_clusters_)

    def values(self, run: PinnedRun, inputs: Path, model: Path, out: Path, *, run_id: str, model_version: str) -> None:
        """See :class:`Engine`."""
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        from ecoval_ops.valuation import EcoVal

        ev = EcoVal.load(model)
        table = ds.dataset(inputs, format="parquet").to_table()
        out.mkdir(parents=True, exist_ok=True)
        if table.num_rows:
            valued = value_batch(
                ev, table, key=run.config.key, run_id=run_id, model_version=model_version, valued_at=datetime.now(UTC)
            )
            pq.write_table(valued, out / "part-0.parquet")

    def write_values(self, cfg: RunConfig, values: Path, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        import pyarrow.parquet as pq

        target, insert = value_target(cfg)
        return merge_values(
            target, pq.read_table(values), key=cfg.key, run_id=run_id, source_version=source_version, insert=insert
        )


class SparkEngine:
    """Spark engine: every O(n) pass on the executors (module docstring).

    Reference sets of fewer than ``mllib_min_rows`` rows are clustered on the driver by the same
    scikit-learn k-means as the delta-rs engine (an MLlib job costs more than the whole
    clustering there), so both engines give the same values on such tables; larger ones are
    clustered by MLlib.

    Args:
        spark: a session; ``None`` starts one when first needed (``$ECOVAL_SPARK_MASTER``, else
            ``local[*]``, with Delta).
        mllib_min_rows: reference rows from which MLlib clusters. Default 50_000.
        sizing: the cores and memory of the session it starts (the run's ``spark_*`` settings).
    """

    def __init__(
        self, spark: SparkSession | None = None, *, mllib_min_rows: int = 50_000, sizing: SparkSizing | None = None
    ) -> None:
        self.spark = spark
        self.mllib_min_rows = mllib_min_rows
        self.sizing = sizing

    def _session(self) -> SparkSession:
        if self.spark is None:
            from ecoval_ops.lakehouse.spark import spark_session

            self.spark = spark_session(sizing=self.sizing)
        return self.spark

    def embed(self, cfg: RunConfig, source: str | Path, version: int, embedder: Embedder, target: Path) -> int:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.delta_spark import commit_conflicts
        from ecoval_ops.lakehouse.spark_engine import embed_rows

        return embed_once(
            target,
            version,
            commit_conflicts(),
            lambda: embed_rows(
                self._session(),
                str(source),
                version,
                embedder,
                key=cfg.key,
                target=str(target),
                app_id=embed_app_id(target),
                target_exists=(target / "_delta_log").exists(),
            ),
        )

    def plan(self, run: PinnedRun) -> tuple[TrainingPlan, pa.Array]:
        """See :class:`Engine`: the draws, the clustering sample, the strata and the reference set by Spark."""
        from ecoval_ops.lakehouse.spark_engine import SparkKMeansClusterer, spark_plan

        spark = self._session()
        validation = run.validation_rows()
        return spark_plan(
            spark,
            run.row_source,
            lambda n: run.estimator(SparkKMeansClusterer(spark) if n >= self.mllib_min_rows else None),
            limit=run.config.reference_rows,
            validation=None if validation is None else (validation.X, validation.y),
        )

    def row_inputs(self, run: PinnedRun, model: Path, out: Path, *, only_new: bool) -> NDArray[np.float64]:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.spark_engine import spark_row_inputs

        return spark_row_inputs(self._session(), run.row_source, model, out, only_new=only_new)

    def values(self, run: PinnedRun, inputs: Path, model: Path, out: Path, *, run_id: str, model_version: str) -> None:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.spark_engine import spark_values

        spark_values(self._session(), run.config.key, inputs, model, out, run_id=run_id, model_version=model_version)

    def write_values(self, cfg: RunConfig, values: Path, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.delta_spark import merge_values_spark

        target, insert = value_target(cfg)
        return merge_values_spark(
            self._session(), target, values, key=cfg.key, run_id=run_id, source_version=source_version, insert=insert
        )


def engine_for(cfg: RunConfig, **options: Any) -> Engine:
    """The engine ``cfg.engine`` names."""
    if cfg.engine == "delta-rs":
        return DeltaRsEngine()
    if cfg.engine == "spark":
        from ecoval_ops.lakehouse.spark import SparkSizing

        sizing = SparkSizing(cfg.spark_cores, cfg.spark_driver_memory, cfg.spark_executor_memory)
        return SparkEngine(**{"sizing": sizing, **options})
    raise EcovalError(f"unknown engine {cfg.engine!r}")
