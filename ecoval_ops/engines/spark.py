"""The Spark engine: every pass over rows on the executors (architecture.md; spec section 5b).

The checks and counts run the passes of :mod:`ecoval_ops.lakehouse.checks` with ``mapInArrow``
and collect one small partial per partition; duplicates and anti-joins are shuffles; the plan
(:mod:`.spark_plan`) and the row passes (:mod:`.spark_rows`) read the tables where they lie.
The driver holds the reference set and O(p), O(classes) aggregates, never the table's keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.engines.base import RunRows, value_target
from ecoval_ops.lakehouse.embeddings import embed_app_id, embed_once
from ecoval_ops.lakehouse.tables import TableLike, spark_path, table_exists

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from ecoval_ops.config import RunConfig
    from ecoval_ops.lakehouse.checks import NewRows, SourceCheck
    from ecoval_ops.lakehouse.embedders import Embedder
    from ecoval_ops.lakehouse.source import SourceColumns
    from ecoval_ops.lakehouse.spark import SparkSizing
    from ecoval_ops.lakehouse.summary import ValueSummary
    from ecoval_ops.storage import TableRef
    from ecoval_ops.valuation import TrainingPlan
    from ecoval_ops.valuation.clustering import ClusterAssigner

__all__ = ["SparkEngine"]


class SparkEngine:
    """Spark engine: every O(n) pass on the executors (module docstring).

    Clustering samples of fewer than ``mllib_min_rows`` rows are clustered on the driver by the
    same scikit-learn k-means as the delta-rs engine, so both engines give the same values on
    such tables; larger ones are clustered by MLlib. The sample is on the driver already (at
    most ``max_reference_rows``, 200,000 by default), and there an MLlib job costs more than the
    whole clustering: 32-41 s against 6.2 s for 200,000 rows x 64-d, p = 12 (2 cores).

    Args:
        spark: a session; ``None`` starts one when first needed (``$ECOVAL_SPARK_MASTER``, else
            ``local[*]``, with Delta).
        mllib_min_rows: clustering-sample rows from which MLlib clusters. Default 1_000_000,
            above the default ``max_reference_rows``.
        sizing: the cores and memory of the session it starts (the run's ``spark_*`` settings).
        remote: a Spark Connect server to attach to instead of starting a session (the run's
            ``spark_remote``, or its ``spark_conn_id`` connection's URL).
        tables: the run's tables, whose object stores the session is given the settings of.
    """

    def __init__(
        self,
        spark: SparkSession | None = None,
        *,
        mllib_min_rows: int = 1_000_000,
        sizing: SparkSizing | None = None,
        remote: str | None = None,
        tables: Sequence[TableRef] = (),
    ) -> None:
        from ecoval_ops.lakehouse.spark import reach_tables

        self.spark = None if spark is None else reach_tables(spark, tables)
        self.mllib_min_rows = mllib_min_rows
        self.sizing = sizing
        self.remote = remote
        self.tables = tuple(tables)

    def _session(self) -> SparkSession:
        if self.spark is None:
            from ecoval_ops.lakehouse.spark import spark_session

            self.spark = spark_session(remote=self.remote, sizing=self.sizing, tables=self.tables)
        return self.spark

    def close(self) -> None:
        """See :class:`Engine`: a Spark Connect server keeps a session until its idle timeout unless released.

        An application this process started ends with it, and a session passed in is the caller's.
        """
        if self.remote and self.spark is not None:
            self.spark.stop()
            self.spark = None

    def embed(self, cfg: RunConfig, source: TableLike, version: int, embedder: Embedder, target: TableLike) -> int:
        """See :class:`Engine`."""
        from ecoval_ops.engines.spark_rows import embed_rows
        from ecoval_ops.lakehouse.delta_spark import commit_conflicts

        return embed_once(
            target,
            version,
            commit_conflicts(),
            lambda: embed_rows(
                self._session(),
                spark_path(source),
                version,
                embedder,
                key=cfg.source.key,
                target=spark_path(target),
                app_id=embed_app_id(target),
                target_exists=table_exists(target),
            ),
        )

    def check_source(
        self, columns: SourceColumns, path: TableLike, version: int, *, fraction: float | None
    ) -> SourceCheck:
        """See :class:`Engine`: the checks' pass on the executors, duplicates by a shuffle."""
        from ecoval_ops.identifiers import check_identifier
        from ecoval_ops.lakehouse.batches import run_spark
        from ecoval_ops.lakehouse.checks import SourcePass, check_counts, check_duplicates
        from ecoval_ops.lakehouse.delta_spark import repeated_keys
        from ecoval_ops.lakehouse.source_checks import check_schema

        where = f"{path}@v{version}"
        schema = check_schema(columns, path, version)
        key = check_identifier(columns.key, "key column")
        step = SourcePass(
            key, check_identifier(columns.label, "label column"), schema.field(columns.label).type, fraction
        )
        frame = self._session().read.format("delta").option("versionAsOf", version).load(spark_path(path))
        check = run_spark(step, frame)
        check_counts(check, key=columns.key, label=columns.label, where=where)
        check_duplicates(repeated_keys(frame, key), key=columns.key, where=where)
        return check

    def new_rows(self, run: RunRows) -> NewRows:
        """See :class:`Engine`: counted and digested on the executors."""
        from ecoval_ops.engines.spark_rows import source_frame
        from ecoval_ops.lakehouse.batches import run_spark
        from ecoval_ops.lakehouse.checks import NewRowsPass

        return run_spark(
            NewRowsPass(run.config.source.key), source_frame(self._session(), run.row_source, only_new=True)
        )

    def new_cluster_counts(self, run: RunRows, assign: ClusterAssigner) -> NDArray[np.int64]:
        """See :class:`Engine`: the rows are assigned on the executors."""
        from ecoval_ops.engines.spark_rows import rows_frame
        from ecoval_ops.lakehouse.batches import run_spark
        from ecoval_ops.lakehouse.checks import ClusterCountPass

        return run_spark(ClusterCountPass(assign), rows_frame(self._session(), run.row_source, only_new=True))

    def summarise(self, run: RunRows, values: TableRef, *, top: int) -> ValueSummary | None:
        """See :class:`Engine`: each pass on the executors over the Parquet where it lies."""
        from ecoval_ops.files import parquet_dataset
        from ecoval_ops.lakehouse.batches import BatchPass, run_spark
        from ecoval_ops.lakehouse.summary import TopRowsPass, summarise

        frame = self._session().read.parquet(spark_path(values))

        def on_executors(step: BatchPass[Any]) -> Any:
            return run_spark(step, frame)

        key = run.config.source.key
        rows = TopRowsPass(key, parquet_dataset(values).schema.field(key).type, top)
        return summarise(on_executors, top=rows, new=True)

    def plan(self, run: RunRows) -> tuple[TrainingPlan, pa.Array]:
        """See :class:`Engine`: the draws, the clustering sample, the strata and the reference set by Spark."""
        from ecoval_ops.engines.spark_plan import SparkKMeansClusterer, spark_plan

        spark = self._session()
        return spark_plan(
            spark,
            run.row_source,
            lambda n: run.estimator(SparkKMeansClusterer(spark) if n >= self.mllib_min_rows else None),
            limit=run.config.method.max_reference_rows,
            validation=run.validation_source,
            validation_limit=run.config.source.validation_rows,
        )

    def row_inputs(self, run: RunRows, model: TableRef, out: TableRef, *, only_new: bool) -> NDArray[np.float64]:
        """See :class:`Engine`."""
        from ecoval_ops.engines.spark_rows import spark_row_inputs

        return spark_row_inputs(self._session(), run.row_source, model, out, only_new=only_new)

    def values(
        self, run: RunRows, inputs: TableRef, model: TableRef, out: TableRef, *, run_id: str, model_version: str
    ) -> None:
        """See :class:`Engine`."""
        from ecoval_ops.engines.spark_rows import spark_values

        spark_values(
            self._session(), run.config.source.key, inputs, model, out, run_id=run_id, model_version=model_version
        )

    def write_values(self, cfg: RunConfig, values: TableRef, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.delta_spark import merge_values_spark

        target, insert = value_target(cfg)
        return merge_values_spark(
            self._session(),
            target,
            values,
            key=cfg.source.key,
            run_id=run_id,
            source_version=source_version,
            insert=insert,
        )
