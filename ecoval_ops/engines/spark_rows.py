"""The engine's row passes on Spark (architecture.md, steps 2 and 5; spec section 5b).

The driver never collects the table, the embeddings or the values: every O(n) pass runs on the
executors over the Delta tables read where they lie.

- :func:`embed_rows` runs an embedder with ``mapInPandas`` in Arrow batches and appends the
  embeddings to the embeddings Delta table (idempotent per source version);
- :func:`rows_frame` is the run's rows (key, label, embedding) as a DataFrame;
- :func:`spark_row_inputs` and :func:`spark_values` are the two row passes of
  :mod:`ecoval_ops.engines.rows` in ``mapInPandas``; the per-cluster sums of ``x_i`` are one
  aggregate. The first gets each partition's rows sorted by cluster (:func:`by_cluster`), so a
  Python worker holds one cluster's neighbour index at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from ecoval_ops.files import read, stamp
from ecoval_ops.identifiers import check_identifier
from ecoval_ops.lakehouse.columns import EMBEDDING_COL, NEW_COL
from ecoval_ops.lakehouse.tables import spark_path

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from ecoval_ops.lakehouse.embedders import Embedder
    from ecoval_ops.lakehouse.source import RowSource
    from ecoval_ops.storage import TableRef
    from ecoval_ops.valuation import EcoVal
    from ecoval_ops.valuation.clustering import ClusterAssigner

__all__ = ["by_cluster", "embed_rows", "matrix", "rows_frame", "source_frame", "spark_row_inputs", "spark_values"]


def embed_rows(
    spark: SparkSession,
    source: str,
    version: int,
    embedder: Embedder,
    *,
    key: str,
    target: str,
    app_id: str,
    target_exists: bool,
) -> int:
    """Append the embeddings of the rows of ``source@version`` that ``target`` lacks.

    The embedder runs in ``mapInPandas`` batches on the executors; the append carries Delta's
    idempotent-write options (``txnAppId``, ``txnVersion`` = the source version), so a retried
    call commits nothing.

    Returns:
        Rows embedded.
    """
    q_key = check_identifier(key, "key column")
    columns = [check_identifier(c, "embedder column") for c in embedder.columns]
    frame = spark.read.format("delta").option("versionAsOf", version).load(source).select(q_key, *columns)
    if target_exists:
        done = spark.read.format("delta").load(target).select(q_key)
        frame = frame.join(done, on=q_key, how="left_anti")
    key_type = frame.schema[q_key].dataType.simpleString()

    def batches(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for part in parts:
            if len(part):
                yield pd.DataFrame({q_key: part[q_key], EMBEDDING_COL: list(embedder.embed(part))})

    embedded = plain_strings(frame.mapInPandas(batches, f"{q_key} {key_type}, {EMBEDDING_COL} array<double>")).cache()
    try:
        count = embedded.count()
        (
            embedded.write.format("delta")
            .mode("append")
            .option("txnAppId", app_id)
            .option("txnVersion", str(version))
            .save(target)
        )
    finally:
        embedded.unpersist()
    return int(count)


def plain_strings(frame: DataFrame) -> DataFrame:
    """``frame`` with its string columns cast to Spark's default string type.

    Over Spark Connect (4.2) a Python UDF's string result comes back explicitly collated
    ``UTF8_BINARY``, which Delta records as ``string collate UTF8_BINARY``, a type delta-rs
    cannot open; the cast gives the plain ``string`` an in-process session writes.
    """
    from pyspark.sql import functions as sf
    from pyspark.sql.types import StringType

    return frame.select(
        *(
            sf.col(f.name).cast("string").alias(f.name) if isinstance(f.dataType, StringType) else sf.col(f.name)
            for f in frame.schema.fields
        )
    )


def source_frame(spark: SparkSession, rows: RowSource, *, only_new: bool) -> DataFrame:
    """``key``, ``label`` and ``ecoval_new`` of the pinned source version, and the embedding column when it holds them.

    ``ecoval_new`` (:data:`~ecoval_ops.lakehouse.columns.NEW_COL`) tells the rows no run has
    valued (``ecoval_run_id IS NULL``, or keys absent from the values table as pinned);
    ``only_new`` keeps those rows only.
    """
    from pyspark.sql import functions as sf

    columns = rows.columns
    key, label = check_identifier(columns.key, "key column"), check_identifier(columns.label, "label column")
    source = spark.read.format("delta").option("versionAsOf", rows.version).load(spark_path(rows.table))
    if rows.values_table is not None:
        new = sf.lit(True)
        if rows.values_version is not None:
            valued = (
                spark.read.format("delta")
                .option("versionAsOf", rows.values_version)
                .load(spark_path(rows.values_table))
                .filter(sf.col("ecoval_run_id").isNotNull())
                .select(key, sf.lit(True).alias("ecoval_valued"))
            )
            source = source.join(valued, on=key, how="left")
            new = sf.col("ecoval_valued").isNull()
    elif "ecoval_run_id" in source.columns:
        new = sf.col("ecoval_run_id").isNull()
    else:
        new = sf.lit(True)
    source = source.withColumn(NEW_COL, new)
    if only_new:
        source = source.filter(sf.col(NEW_COL))
    embedding = [] if rows.embeddings is not None else [check_identifier(columns.embedding_col, "embedding column")]
    return source.select(key, label, NEW_COL, *embedding)


def rows_frame(spark: SparkSession, rows: RowSource, *, only_new: bool) -> DataFrame:
    """:func:`source_frame` with ``ecoval_embedding`` (``array<double>``).

    The embeddings come from the embeddings table (joined on the key; a row without one has a
    null embedding) or from the source's ``embedding_col``.
    """
    from pyspark.sql.functions import col

    columns = rows.columns
    key, label = check_identifier(columns.key, "key column"), check_identifier(columns.label, "label column")
    source = source_frame(spark, rows, only_new=only_new)
    if rows.embeddings is None:
        column = check_identifier(columns.embedding_col, "embedding column")
        return source.select(key, label, NEW_COL, col(column).cast("array<double>").alias(EMBEDDING_COL))
    vectors = spark.read.format("delta").load(spark_path(rows.embeddings)).select(key, EMBEDDING_COL)
    return source.join(vectors, on=key, how="left")


def matrix(part: pd.DataFrame) -> NDArray[np.float64]:
    """The embeddings of a batch as an ``(m, d)`` matrix."""
    return np.stack(part[EMBEDDING_COL].to_numpy()).astype(np.float64, copy=False)


def spark_row_inputs(
    spark: SparkSession, source: RowSource, model: TableRef, out: TableRef, *, only_new: bool
) -> NDArray[np.float64]:
    """The first row pass on the executors (:func:`~ecoval_ops.engines.rows.input_batch` in ``mapInPandas``).

    Writes the inputs as Parquet in ``out``; returns the per-cluster sums of ``x_i`` over the
    training rows (one aggregate job).
    """
    from pyspark.sql import functions as sf

    from ecoval_ops.engines.rows import CLUSTER_COL, INPUT_COLUMNS, TRAINING_COL, input_batch

    key = check_identifier(source.columns.key, "key column")
    label = check_identifier(source.columns.label, "label column")
    written_at = stamp(model)
    # The executors may lack the driver's AWS environment (a worker host of its own).
    model = model.with_environment()
    fitted = _load_state(model, written_at)
    frame = by_cluster(rows_frame(spark, source, only_new=only_new), fitted.model_.assigner())
    key_type, label_type = (frame.schema[c].dataType.simpleString() for c in (key, label))
    types = f"{key} {key_type}, ecoval_support {label_type}"

    def inputs(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ev = _load_state(model, written_at)
        for part in parts:
            if not len(part):
                continue
            keys = part[key].to_numpy()
            training = np.zeros(len(part), bool) if only_new else ~source.held_out(keys)
            new = part[NEW_COL].to_numpy(dtype=bool)
            yield input_batch(ev, keys, matrix(part), part[label].to_numpy(), training, new, key=key).to_pandas()

    columns = ", ".join(f"{name} {kind}" for name, kind in INPUT_COLUMNS.items())
    frame.mapInPandas(inputs, f"{types}, {columns}").write.mode("overwrite").parquet(spark_path(out))
    sums = np.zeros(fitted.n_clusters_)
    x = sf.col("ecoval_intrinsic") * sf.col("ecoval_extrinsic")
    written = spark.read.parquet(spark_path(out)).filter(sf.col(TRAINING_COL))
    for r in written.groupBy(CLUSTER_COL).agg(sf.sum(x)).collect():
        sums[r[0]] = r[1]
    return sums


def spark_values(
    spark: SparkSession,
    key: str,
    inputs: TableRef,
    model: TableRef,
    out: TableRef,
    *,
    run_id: str,
    model_version: str,
) -> None:
    """The second row pass on the executors: the value columns of the inputs.

    :func:`~ecoval_ops.engines.rows.value_batch` in ``mapInPandas``; Parquet in ``out``.
    """
    from ecoval_ops.engines.rows import value_batch
    from ecoval_ops.lakehouse.columns import value_schema

    key = check_identifier(key, "key column")
    written_at = stamp(model)
    # The executors may lack the driver's AWS environment (a worker host of its own).
    model = model.with_environment()
    valued_at = datetime.now(UTC)
    frame = spark.read.parquet(spark_path(inputs))
    label_type = frame.schema["ecoval_support"].dataType.simpleString()

    def values(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ev = _load_state(model, written_at)
        for part in parts:
            if len(part):
                batch = pa.Table.from_pandas(part, preserve_index=False)
                valued = value_batch(
                    ev, batch, key=key, run_id=run_id, model_version=model_version, valued_at=valued_at
                )
                yield valued.to_pandas()

    spark_types = {"double": "double", "int32": "int", "int64": "bigint", "bool": "boolean", "string": "string"}
    fields = ", ".join(
        f"{f.name} {label_type if f.name == 'ecoval_suggested_label' else spark_types.get(str(f.type), 'timestamp')}"
        for f in value_schema(pa.string())
    )
    key_type = frame.schema[key].dataType.simpleString()
    schema = f"{key} {key_type}, {fields}, {NEW_COL} boolean"
    frame.mapInPandas(values, schema).write.mode("overwrite").parquet(spark_path(out))


def by_cluster(frame: DataFrame, assign: ClusterAssigner) -> DataFrame:
    """``frame`` with each row's cluster (``ecoval_cluster``), each partition's rows sorted by it.

    A Python worker's batches then hold one cluster each (two where a cluster ends), so it builds
    one cluster's neighbour index at a time, each once per task (``per_cluster`` of
    :class:`~ecoval_ops.valuation.propagation_state.PropagationState`). The sort stays within the
    partitions: a shuffle on the cluster would move every embedding and leave as many tasks as
    clusters (at 1e6 rows x 64-d, 2 cores: the sort adds 2.8 s to the pass, a shuffle and the
    sort 6.9 s).
    """
    from pyspark.sql import functions as sf

    from ecoval_ops.engines.rows import CLUSTER_COL
    from ecoval_ops.lakehouse.checks import list_matrix

    @sf.arrow_udf("int")  # type: ignore[attr-defined,untyped-decorator]
    def clusters(embeddings: pa.Array) -> pa.Array:
        return pa.array(assign(list_matrix(embeddings)) if len(embeddings) else [], pa.int32())

    return frame.withColumn(CLUSTER_COL, clusters(EMBEDDING_COL)).sortWithinPartitions(CLUSTER_COL)


@lru_cache(maxsize=2)
def _load_state(model: TableRef, written_at: str) -> EcoVal:
    """The saved valuation state, loaded once per Python worker (workers are reused) for passes by cluster.

    ``written_at`` (:func:`~ecoval_ops.files.stamp`) keys the cache, so a state committed anew
    at the same place is loaded again. The members are mapped, not read (``per_cluster``): the
    values' pass never reads them, and the inputs' pass, grouped by :func:`by_cluster`, reads
    those of the clusters it searches.
    """
    from ecoval_ops.valuation import EcoVal

    return read(model, lambda path: EcoVal.load(path, per_cluster=True))
