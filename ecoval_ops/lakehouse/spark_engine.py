"""Spark implementations of the engine's steps (architecture.md, steps 2, 4 and 5).

- :func:`embed_rows` runs an embedder with ``mapInPandas`` in Arrow batches and appends the
  embeddings to the embeddings Delta table (idempotent per source version);
- :class:`SparkKMeansClusterer` satisfies the ``Clusterer`` Protocol with Spark MLlib's KMeans
  (k-means|| initialisation, fixed seed), for clustering at scale;
- :func:`value_by_cluster` values rows out of sample per cluster with ``applyInPandas``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.identifiers import check_identifier
from ecoval_ops.lakehouse.columns import EMBEDDING_COL

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from ecoval_ops.lakehouse.embedders import Embedder
    from ecoval_ops.valuation import EcoVal

__all__ = ["SparkKMeansClusterer", "embed_rows", "value_by_cluster"]


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

    embedded = frame.mapInPandas(batches, f"{q_key} {key_type}, {EMBEDDING_COL} array<double>").cache()
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


def value_by_cluster(
    spark: SparkSession,
    keys: NDArray[np.generic],
    X: NDArray[np.float64],
    y: NDArray[np.generic],
    model: Path,
    out: Path,
    *,
    key: str,
    run_id: str,
    model_version: str,
) -> None:
    """Value rows out of sample with Spark: assign clusters, then ``groupBy(cluster).applyInPandas``.

    Each executor loads the saved valuation state once (arrays and JSON, no pickle) and values
    one cluster's rows at a time against that cluster's members (spec section 5). The value
    columns land as Parquet in ``out``.
    """
    import pyarrow as pa

    from ecoval_ops.lakehouse.columns import value_schema

    q_key = check_identifier(key, "key column")
    state = str(model)
    valued_at = datetime.now(UTC)
    rows = pa.table(
        {
            q_key: pa.array(keys),
            "ecoval_label": pa.array(y),
            EMBEDDING_COL: pa.array(list(X), pa.list_(pa.float64())),
        }
    )
    frame = spark.createDataFrame(rows.to_pandas())
    input_schema = frame.schema.simpleString()[len("struct<") : -1]
    key_type = frame.schema[q_key].dataType.simpleString()

    def assign(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ev = _load_state(state)
        for part in parts:
            Z = ev.feature_space_.cluster_space(np.stack(part[EMBEDDING_COL].to_numpy()))
            yield part.assign(ecoval_cluster=ev.cluster_model_.assign(Z).astype(np.int32))

    def value(part: pd.DataFrame) -> pd.DataFrame:
        from ecoval_ops.lakehouse.columns import value_columns

        ev = _load_state(state)
        result = ev.value_rows(np.stack(part[EMBEDDING_COL].to_numpy()), part["ecoval_label"].to_numpy())
        table = value_columns(
            part[q_key].to_numpy(),
            result,
            key=q_key,
            reference=ev.values_,
            run_id=run_id,
            model_version=model_version,
            valued_at=valued_at,
        )
        return table.to_pandas()

    spark_types = {"double": "double", "int32": "int", "int64": "bigint", "bool": "boolean", "string": "string"}
    schema = value_schema(rows.schema.field("ecoval_label").type)
    value_fields = ", ".join(f"{f.name} {spark_types.get(str(f.type), 'timestamp')}" for f in schema)
    (
        frame.mapInPandas(assign, f"{input_schema}, ecoval_cluster int")
        .groupBy("ecoval_cluster")
        .applyInPandas(value, f"{q_key} {key_type}, {value_fields}")
        .write.mode("overwrite")
        .parquet(str(out))
    )


@lru_cache(maxsize=1)
def _load_state(path: str) -> EcoVal:
    """The saved valuation state, loaded once per Python worker (workers are reused)."""
    from ecoval_ops.valuation import EcoVal

    return EcoVal.load(path)


class SparkKMeansClusterer:
    """k-means on Spark MLlib (``pyspark.ml.clustering.KMeans``), the Clusterer Protocol.

    Args:
        spark: the session.
        max_iter: Lloyd iterations. Default 50.
    """

    def __init__(self, spark: SparkSession, *, max_iter: int = 50) -> None:
        self.spark = spark
        self.max_iter = max_iter

    def fit_predict(self, Z: NDArray[np.float64], n_clusters: int, seed: int) -> NDArray[np.int64]:
        """Return ``(n,)`` cluster ids of the rows of ``Z``, in row order."""
        import pandas as pd
        from pyspark.ml.clustering import KMeans
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql.functions import col

        rows = pd.DataFrame({"row": np.arange(Z.shape[0], dtype=np.int64), "z": list(Z)})
        frame = self.spark.createDataFrame(rows).select("row", array_to_vector(col("z")).alias("features"))
        model = KMeans(k=n_clusters, seed=seed, maxIter=self.max_iter, initMode="k-means||").fit(frame)
        labelled = model.transform(frame).select("row", col("prediction").cast("long").alias("cluster"))
        table = labelled.toArrow().sort_by("row")
        return np.asarray(table.column("cluster").to_numpy(), dtype=np.int64)
