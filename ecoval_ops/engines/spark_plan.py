"""The plan of a refit drawn by Spark (spec section 5b): the driver holds O(R d) rows.

:func:`spark_plan` draws the clustering sample and the reference set on the executors (the
driver collects those and per-stratum counts and thresholds) and plans the trainings;
:class:`SparkKMeansClusterer` satisfies the ``Clusterer`` Protocol with Spark MLlib's KMeans
(k-means|| initialisation, fixed seed), for clustering large reference sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.engines.spark_rows import matrix, rows_frame
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import check_identifier
from ecoval_ops.lakehouse.columns import EMBEDDING_COL, NEW_COL

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from ecoval_ops.lakehouse.source import RowSource
    from ecoval_ops.valuation import EcoVal, FeatureSpace, TrainingPlan
    from ecoval_ops.valuation.clustering import ClusterModel

__all__ = ["SparkKMeansClusterer", "spark_plan"]


def _list_matrix(column: pa.ChunkedArray) -> NDArray[np.float64]:
    """A collected list column of equal-length embeddings as an ``(m, d)`` matrix."""
    import pyarrow.compute as pc

    if len(column) == 0:
        return np.zeros((0, 0))
    width = len(column[0])
    return np.asarray(pc.list_flatten(column).to_numpy(), dtype=np.float64).reshape(len(column), width)


def _first_non_finite(vector: NDArray[np.float64] | None) -> int:
    """The first dimension of an embedding that is null, NaN or infinite; -1 for none (or no embedding)."""
    if vector is None:
        return -1
    bad = np.flatnonzero(~np.isfinite(np.asarray(vector, dtype=np.float64)))
    return int(bad[0]) if bad.size else -1


def _first_non_finite_rows(vectors: pd.Series) -> NDArray[np.int64]:
    """:func:`_first_non_finite` of each row, as one array operation when the batch stacks.

    A per-row loop cost about 5 s of executor time per million rows; only a batch holding a
    missing or uneven embedding (which the row checks then report) takes it.
    """
    try:
        bad = ~np.isfinite(np.stack(vectors.to_numpy()).astype(np.float64, copy=False))
    except (TypeError, ValueError):
        return np.array([_first_non_finite(v) for v in vectors], dtype=np.int64)
    return np.where(bad.any(axis=1), bad.argmax(axis=1), -1).astype(np.int64)


def _sorted(table: pa.Table, key: str) -> pa.Table:
    """``table`` in key order, the order of the delta-rs engine's rows."""
    order = np.argsort(table.column(key).to_numpy(zero_copy_only=False), kind="stable")
    return table.take(order)


def _check_rows(rows: DataFrame, source: RowSource) -> None:
    """Raise on rows without an embedding, or with embeddings of NaN, infinite or uneven entries.

    ``ecoval_bad`` is each row's first non-finite dimension (-1 for none); one job counts, a
    second one counts the rows of the first bad dimension when there are any.
    """
    from pyspark.sql import functions as sf

    from ecoval_ops.lakehouse.source_checks import non_finite_error

    where = source.where
    bad = sf.col("ecoval_bad") >= 0
    counts = rows.agg(
        sf.count(sf.lit(1)).alias("rows"),
        sf.sum(sf.col(EMBEDDING_COL).isNull().cast("long")).alias("missing"),
        sf.sum(bad.cast("long")).alias("bad"),
        sf.min(sf.when(bad, sf.col("ecoval_bad"))).alias("first"),
        sf.countDistinct(sf.size(EMBEDDING_COL)).alias("widths"),
    ).first()
    if counts is None or not counts["rows"]:
        raise InvalidInputError(f"{where} is empty: there are no rows to value")
    if counts["missing"]:
        origin = source.embeddings or source.columns.embedding_col
        raise InvalidInputError(f"{counts['missing']} rows of {where} have no embedding in {origin}")
    if counts["widths"] != 1:
        raise InvalidInputError(
            f"embeddings of {where} must share one non-zero length; found {counts['widths']} lengths"
        )
    if counts["bad"]:
        first = int(counts["first"])
        entry = sf.element_at(EMBEDDING_COL, first + 1)
        in_first = rows.filter(entry.isNull() | sf.isnan(entry) | (sf.abs(entry) == float("inf"))).count()
        raise non_finite_error(source.columns, where, first, in_first, int(counts["bad"]))


def _fit_clusters(
    sample: pa.Table, estimator_for: Callable[[int], EcoVal]
) -> tuple[EcoVal, FeatureSpace, ClusterModel, int]:
    """The run's estimator, the feature space and the clusters fitted on the clustering ``sample``; its width."""
    from ecoval_ops.valuation import stages
    from ecoval_ops.valuation._inputs import check_features

    X_sample = check_features(_list_matrix(sample.column(EMBEDDING_COL)), "X_train")
    estimator = estimator_for(sample.num_rows)
    space, model = stages.fit_clusters(estimator, X_sample)
    return estimator, space, model, X_sample.shape[1]


def drawn_rows(spark: SparkSession, source: RowSource) -> DataFrame:
    """:func:`~ecoval_ops.engines.spark_rows.rows_frame` with each row's draw, hold-out side and first bad dimension.

    ``ecoval_draw`` is :func:`~ecoval_ops.valuation.reference.key_draws`, ``ecoval_held`` the
    hold-out split, ``ecoval_bad`` the first null, NaN or infinite dimension of the embedding (-1).
    """
    key = check_identifier(source.columns.key, "key column")
    label = check_identifier(source.columns.label, "label column")
    seed = source.seed
    frame = rows_frame(spark, source, only_new=False).drop(NEW_COL)
    types = ", ".join(f"{c} {frame.schema[c].dataType.simpleString()}" for c in (key, label))

    def drawn(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ecoval_ops.valuation.reference import key_draws

        for part in parts:
            keys = part[key].to_numpy()
            yield part.assign(
                ecoval_draw=key_draws(keys, seed),
                ecoval_held=source.held_out(keys),
                ecoval_bad=_first_non_finite_rows(part[EMBEDDING_COL]),
            )

    return frame.mapInPandas(
        drawn, f"{types}, {EMBEDDING_COL} array<double>, ecoval_draw bigint, ecoval_held boolean, ecoval_bad int"
    )


def spark_plan(
    spark: SparkSession,
    source: RowSource,
    estimator_for: Callable[[int], EcoVal],
    *,
    limit: int,
    validation: RowSource | None,
    validation_limit: int,
) -> tuple[TrainingPlan, pa.Array]:
    """The plan of a refit drawn by Spark (spec section 5b); the driver holds O(R d) rows.

    Args:
        spark: the session.
        source: the run's rows.
        estimator_for: the run's EcoVal for a clustering sample of so many rows.
        limit: R, the most reference rows.
        validation: the validation table's rows; None holds out rows of the source.
        validation_limit: the most validation rows (those of smallest draw) the trainings are scored on.

    Jobs over the pinned version (kept on the executors' disks meanwhile): the row checks; the
    classes; the clustering sample (the R smallest draws); the validation rows (the
    ``validation_limit`` smallest draws of the held-out rows or of the validation table); the
    rows per cluster and class and each stratum's threshold (``groupBy.applyInPandas``), from
    each row's draw and stratum (kept too); the reference rows (the rule of
    :func:`~ecoval_ops.valuation.reference.reference_mask`). The driver fits the clusters on the
    sample and plans the trainings on the reference rows, as :meth:`~ecoval_ops.valuation.EcoVal.prepare` does in-core.

    Returns:
        The plan and the members' keys, in key order, of the key column's type in the table.
    """
    import pandas as pd
    from pyspark import StorageLevel
    from pyspark.sql import functions as sf

    from ecoval_ops.valuation import stages
    from ecoval_ops.valuation._inputs import check_features, check_labels, encode_labels
    from ecoval_ops.valuation.reference import quotas, reference_mask, stratum_threshold

    key = check_identifier(source.columns.key, "key column")
    label = check_identifier(source.columns.label, "label column")
    rows = drawn_rows(spark, source).persist(StorageLevel.DISK_ONLY)
    try:
        _check_rows(rows, source)
        train = rows.filter(~sf.col("ecoval_held"))
        classes = np.unique(np.asarray([r[0] for r in train.select(label).distinct().collect()]))
        if classes.size == 0:
            raise InvalidInputError(f"every row of {source.table} is held out; lower validation_fraction")
        wanted = [key, label, EMBEDDING_COL, "ecoval_draw"]
        # The sample is not kept: the driver holds it only while the clusters are fitted.
        estimator, space, model, width = _fit_clusters(
            _sorted(train.orderBy("ecoval_draw").limit(limit).select(*wanted).toArrow(), key), estimator_for
        )
        held = rows.filter(sf.col("ecoval_held"))
        if validation is not None:
            held = drawn_rows(spark, validation)
            _check_rows(held, validation)
        scored = _sorted(held.orderBy("ecoval_draw").limit(validation_limit).select(*wanted).toArrow(), key)
        X_val = _list_matrix(scored.column(EMBEDDING_COL))
        y_val = scored.column(label).to_numpy(zero_copy_only=False)
        p, n_classes = model.n_clusters, classes.size

        def strata(part: pd.DataFrame) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
            clusters = model.assign(space.cluster_space(matrix(part)))
            return clusters, np.searchsorted(classes, part[label].to_numpy()).astype(np.int64)

        def narrow(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for part in parts:
                clusters, codes = strata(part)
                yield pd.DataFrame(
                    {"ecoval_draw": part["ecoval_draw"], "ecoval_cluster": clusters, "ecoval_class": codes}
                )

        # Each row's draw and stratum, small enough to keep for the two jobs that need them.
        drawn_strata = train.mapInPandas(narrow, "ecoval_draw bigint, ecoval_cluster int, ecoval_class int").persist(
            StorageLevel.DISK_ONLY
        )
        try:
            counts = np.zeros((p, n_classes), dtype=np.int64)
            for r in drawn_strata.groupBy("ecoval_cluster", "ecoval_class").count().collect():
                counts[r[0], r[1]] = r[2]
            quota = quotas(counts, limit)

            def threshold(part: pd.DataFrame) -> pd.DataFrame:
                c, k = int(part["ecoval_cluster"].iloc[0]), int(part["ecoval_class"].iloc[0])
                t = stratum_threshold(part["ecoval_draw"].to_numpy(dtype=np.int64), int(quota[c, k]))
                return pd.DataFrame({"ecoval_cluster": [c], "ecoval_class": [k], "threshold": [t]})

            thresholds = np.full((p, n_classes), -1, dtype=np.int64)
            found = (
                drawn_strata.groupBy("ecoval_cluster", "ecoval_class")
                .applyInPandas(threshold, "ecoval_cluster int, ecoval_class int, threshold bigint")
                .collect()
            )
            for r in found:
                thresholds[r[0], r[1]] = r[2]
        finally:
            drawn_strata.unpersist()

        def members(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for part in parts:
                clusters, codes = strata(part)
                keep = reference_mask(part["ecoval_draw"].to_numpy(dtype=np.int64), clusters, codes, thresholds)
                yield part[keep][wanted].assign(ecoval_cluster=clusters[keep].astype(np.int32))

        types = ", ".join(f"{c} {rows.schema[c].dataType.simpleString()}" for c in (key, label))
        chosen = train.mapInPandas(
            members, f"{types}, {EMBEDDING_COL} array<double>, ecoval_draw bigint, ecoval_cluster int"
        )
        reference = _sorted(chosen.toArrow(), key)
    finally:
        rows.unpersist()
    X_ref = _list_matrix(reference.column(EMBEDDING_COL))
    reference = reference.drop_columns([EMBEDDING_COL])
    labels = reference.column(label).to_numpy(zero_copy_only=False)
    plan = stages.plan_reference(
        estimator,
        space,
        model,
        X_ref,
        encode_labels(check_labels(labels, "y_train", n_rows=labels.size), classes, "y_train"),
        reference.column("ecoval_cluster").to_numpy().astype(np.int64),
        reference.column("ecoval_draw").to_numpy().astype(np.int64),
        sizes=counts.sum(axis=1),
        X_val=check_features(X_val, "X_val", n_features=width),
        y_val=encode_labels(check_labels(y_val, "y_val", n_rows=len(y_val)), classes, "y_val"),
        classes=classes,
    )
    return plan, reference.column(key).combine_chunks().cast(source.key_type())


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
