"""The two engines of a run: who embeds, clusters, propagates and writes (architecture.md).

Both engines read rows through the same checks (:mod:`ecoval_ops.lakehouse.source`), value with
the same EcoVal code and write one MERGE under the same contract
(:mod:`ecoval_ops.lakehouse.value_writes`); they differ in where the work runs:

- :class:`DeltaRsEngine`: in-process with delta-rs, numpy and torch (no JVM);
- :class:`SparkEngine`: embeddings in Arrow batches (``mapInPandas``), MLlib k-means on large
  tables, per-cluster propagation with ``groupBy(cluster).applyInPandas``, delta-spark writes.

Rows are read by delta-rs into numpy for the fit in either engine (a million 64-d embeddings
are 0.5 GB), always sorted by key, so both engines see the same rows in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError
from ecoval_ops.lakehouse import ensure_value_columns, merge_values, open_table
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.delta_rs import create_values_table
from ecoval_ops.lakehouse.embedders import Embedder
from ecoval_ops.lakehouse.embeddings import append_embeddings, embed_app_id, embed_once, new_keys
from ecoval_ops.lakehouse.source import Rows
from ecoval_ops.process import fault_point

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from ecoval_ops.lakehouse.spark import SparkSizing
    from ecoval_ops.valuation.protocols import Clusterer

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
    """Embeds rows, picks the clusterer, values rows out of sample, writes values."""

    def embed(self, cfg: RunConfig, source: str | Path, version: int, embedder: Embedder, target: Path) -> int:
        """Append embeddings of the rows of ``source@version`` missing from ``target``; rows embedded.

        Idempotent per source version: a retried call commits nothing.
        """
        ...

    def clusterer(self, n_rows: int) -> Clusterer | None:
        """The clusterer EcoVal uses for ``n_rows`` training rows (None: scikit-learn k-means)."""
        ...

    def value_out_of_sample(
        self,
        cfg: RunConfig,
        rows: Rows,
        select: NDArray[np.bool_],
        model: Path,
        out: Path,
        *,
        run_id: str,
        model_version: str,
    ) -> None:
        """Value ``rows[select]`` against the saved model ``model``; write Parquet files in ``out``.

        ``run_id`` and ``model_version`` go into the value columns.
        """
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

    def clusterer(self, n_rows: int) -> Clusterer | None:
        """See :class:`Engine`."""
        return None

    def value_out_of_sample(
        self,
        cfg: RunConfig,
        rows: Rows,
        select: NDArray[np.bool_],
        model: Path,
        out: Path,
        *,
        run_id: str,
        model_version: str,
    ) -> None:
        """See :class:`Engine`."""
        import pyarrow.parquet as pq

        from ecoval_ops.lakehouse.columns import value_columns
        from ecoval_ops.valuation import EcoVal

        ev = EcoVal.load(model)
        result = ev.value_rows(rows.X[select], rows.y[select])
        table = value_columns(
            rows.keys[select], result, key=cfg.key, reference=ev.values_, run_id=run_id, model_version=model_version
        )
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / "part-0.parquet")

    def write_values(self, cfg: RunConfig, values: Path, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        import pyarrow.parquet as pq

        target, insert = value_target(cfg)
        return merge_values(
            target, pq.read_table(values), key=cfg.key, run_id=run_id, source_version=source_version, insert=insert
        )


class SparkEngine:
    """Spark engine: embeddings with ``mapInPandas``, MLlib k-means, ``applyInPandas`` propagation.

    Tables with fewer than ``mllib_min_rows`` training rows are clustered on the driver by the
    same scikit-learn k-means as the delta-rs engine (an MLlib job costs more than the whole
    clustering there), so both engines give the same values on such tables; larger ones are
    clustered by MLlib.

    Args:
        spark: a session; ``None`` starts one when first needed (``$ECOVAL_SPARK_MASTER``, else
            ``local[*]``, with Delta).
        mllib_min_rows: training rows from which MLlib clusters. Default 50_000.
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

    def clusterer(self, n_rows: int) -> Clusterer | None:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.spark_engine import SparkKMeansClusterer

        return SparkKMeansClusterer(self._session()) if n_rows >= self.mllib_min_rows else None

    def value_out_of_sample(
        self,
        cfg: RunConfig,
        rows: Rows,
        select: NDArray[np.bool_],
        model: Path,
        out: Path,
        *,
        run_id: str,
        model_version: str,
    ) -> None:
        """See :class:`Engine`.

        Rows go to Spark as Arrow, are assigned to clusters batch by batch, and each cluster is
        valued by ``applyInPandas`` against the saved model.
        """
        from ecoval_ops.lakehouse.spark_engine import value_by_cluster

        value_by_cluster(
            self._session(),
            rows.keys[select],
            rows.X[select],
            rows.y[select],
            model,
            out,
            key=cfg.key,
            run_id=run_id,
            model_version=model_version,
        )

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
