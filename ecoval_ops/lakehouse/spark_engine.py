"""Spark implementations: the features embedder in batches and MLlib k-means (architecture.md).

- :func:`embed_features` builds the embedding vector of each row with ``mapInPandas`` in Arrow
  batches (the ``features`` embedder: numeric columns as float64; EcoVal standardises them, the
  same way for both engines);
- :class:`SparkKMeansClusterer` satisfies the ``Clusterer`` Protocol with Spark MLlib's KMeans
  (k-means|| initialisation, fixed seed), for clustering at scale.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.lakehouse.identifiers import check_identifier

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["EMBEDDING_COL", "SparkKMeansClusterer", "embed_features"]

EMBEDDING_COL = "ecoval_embedding"


def embed_features(frame: DataFrame, features: Sequence[str], *, keep: Sequence[str]) -> DataFrame:
    """Add :data:`EMBEDDING_COL` (``array<double>``) built from ``features``, batch by batch.

    Args:
        frame: the rows.
        features: numeric feature columns (plain identifiers).
        keep: other columns to carry through (key, label, ...).

    Returns:
        ``keep`` columns plus the embedding column.
    """
    names = [check_identifier(c, "feature column") for c in features]
    carried = [check_identifier(c, "column") for c in keep]
    schema = frame.select(*carried).schema.simpleString()[len("struct<") : -1]

    def batches(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in parts:
            out = part[carried].copy()
            out[EMBEDDING_COL] = list(part[names].to_numpy(dtype=np.float64))
            yield out

    return frame.select(*carried, *names).mapInPandas(batches, f"{schema}, {EMBEDDING_COL} array<double>")


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
