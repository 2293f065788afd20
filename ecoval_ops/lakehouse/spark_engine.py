"""Spark implementations of the engine's steps (architecture.md, steps 2, 4 and 5; spec section 5b).

The driver never collects the table, the embeddings or the values: every O(n) pass runs on the
executors over the Delta tables read where they lie.

- :func:`embed_rows` runs an embedder with ``mapInPandas`` in Arrow batches and appends the
  embeddings to the embeddings Delta table (idempotent per source version);
- :func:`spark_plan` draws the clustering sample and the reference set (the driver collects
  those and per-stratum counts and thresholds) and plans the trainings;
- :func:`spark_row_inputs` and :func:`spark_values` are the two row passes of
  :mod:`ecoval_ops.lakehouse.row_values` in ``mapInPandas``; the per-cluster sums of ``x_i``
  are one aggregate;
- :class:`SparkKMeansClusterer` satisfies the ``Clusterer`` Protocol with Spark MLlib's KMeans
  (k-means|| initialisation, fixed seed), for clustering large reference sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import check_identifier
from ecoval_ops.lakehouse.columns import EMBEDDING_COL

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from ecoval_ops.lakehouse.embedders import Embedder
    from ecoval_ops.lakehouse.source import RowSource
    from ecoval_ops.valuation import EcoVal, TrainingPlan

__all__ = [
    "SparkKMeansClusterer",
    "embed_rows",
    "rows_frame",
    "spark_plan",
    "spark_row_inputs",
    "spark_values",
]


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


def rows_frame(spark: SparkSession, rows: RowSource, *, only_new: bool) -> DataFrame:
    """``key``, ``label`` and ``ecoval_embedding`` (``array<double>``) of the pinned source version, read by Spark.

    The embeddings come from the embeddings table (joined on the key; a row without one has a
    null embedding) or from the source's ``embedding_col``. ``only_new`` keeps the rows no run
    has valued (``ecoval_run_id IS NULL``, or keys absent from the values table as pinned).
    """
    from pyspark.sql.functions import col

    columns = rows.columns
    key, label = check_identifier(columns.key, "key column"), check_identifier(columns.label, "label column")
    source = spark.read.format("delta").option("versionAsOf", rows.version).load(str(rows.table))
    if only_new:
        if rows.values_table is not None:
            if rows.values_version is not None:
                valued = (
                    spark.read.format("delta")
                    .option("versionAsOf", rows.values_version)
                    .load(str(rows.values_table))
                    .filter(col("ecoval_run_id").isNotNull())
                    .select(key)
                )
                source = source.join(valued, on=key, how="left_anti")
        elif "ecoval_run_id" in source.columns:
            source = source.filter(col("ecoval_run_id").isNull())
    embeddings = rows.embeddings
    if embeddings is None:
        column = check_identifier(columns.embedding_col, "embedding column")
        return source.select(key, label, col(column).cast("array<double>").alias(EMBEDDING_COL))
    vectors = spark.read.format("delta").load(str(embeddings)).select(key, EMBEDDING_COL)
    return source.select(key, label).join(vectors, on=key, how="left")


def _matrix(part: pd.DataFrame) -> NDArray[np.float64]:
    """The embeddings of a batch as an ``(m, d)`` matrix."""
    return np.stack(part[EMBEDDING_COL].to_numpy()).astype(np.float64, copy=False)


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

    from ecoval_ops.lakehouse.source import non_finite_error

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


def spark_plan(
    spark: SparkSession,
    source: RowSource,
    estimator_for: Callable[[int], EcoVal],
    *,
    limit: int,
    validation: tuple[NDArray[np.float64], NDArray[np.generic]] | None,
) -> tuple[TrainingPlan, pa.Array]:
    """The plan of a refit drawn by Spark (spec section 5b); the driver holds O(R d) rows.

    Args:
        spark: the session.
        source: the run's rows.
        estimator_for: the run's EcoVal for a clustering sample of so many rows.
        limit: R, the most reference rows.
        validation: the validation table's rows; None holds out rows of the source.

    Jobs over the pinned version (kept on the executors' disks meanwhile): the row checks; the
    classes; the clustering sample (the R smallest draws); the held-out validation rows; the
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

    from ecoval_ops.valuation._inputs import check_features, check_labels, encode_labels
    from ecoval_ops.valuation.reference import quotas, reference_mask, stratum_threshold

    key = check_identifier(source.columns.key, "key column")
    label = check_identifier(source.columns.label, "label column")
    seed = source.seed
    frame = rows_frame(spark, source, only_new=False)
    types = f"{key} {frame.schema[key].dataType.simpleString()}, {label} {frame.schema[label].dataType.simpleString()}"

    def drawn(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ecoval_ops.valuation.reference import key_draws

        for part in parts:
            keys = part[key].to_numpy()
            yield part.assign(
                ecoval_draw=key_draws(keys, seed),
                ecoval_held=source.held_out(keys),
                ecoval_bad=[_first_non_finite(v) for v in part[EMBEDDING_COL]],
            )

    rows = frame.mapInPandas(
        drawn,
        f"{types}, {EMBEDDING_COL} array<double>, ecoval_draw bigint, ecoval_held boolean, ecoval_bad int",
    ).persist(StorageLevel.DISK_ONLY)
    try:
        _check_rows(rows, source)
        train = rows.filter(~sf.col("ecoval_held"))
        classes = np.unique(np.asarray([r[0] for r in train.select(label).distinct().collect()]))
        if classes.size == 0:
            raise InvalidInputError(f"every row of {source.table} is held out; lower validation_fraction")
        wanted = [key, label, EMBEDDING_COL, "ecoval_draw"]
        sample = _sorted(train.orderBy("ecoval_draw").limit(limit).select(*wanted).toArrow(), key)
        if validation is None:
            held = _sorted(rows.filter(sf.col("ecoval_held")).select(*wanted).toArrow(), key)
            X_val = _list_matrix(held.column(EMBEDDING_COL))
            y_val = held.column(label).to_numpy(zero_copy_only=False)
        else:
            X_val, y_val = validation
        X_sample = check_features(_list_matrix(sample.column(EMBEDDING_COL)), "X_train")
        estimator = estimator_for(sample.num_rows)
        space, model = estimator.fit_clusters(X_sample)
        p, n_classes = model.n_clusters, classes.size

        def strata(part: pd.DataFrame) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
            clusters = model.assign(space.cluster_space(_matrix(part)))
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

        chosen = train.mapInPandas(
            members, f"{types}, {EMBEDDING_COL} array<double>, ecoval_draw bigint, ecoval_cluster int"
        )
        reference = _sorted(chosen.toArrow(), key)
    finally:
        rows.unpersist()
    labels = reference.column(label).to_numpy(zero_copy_only=False)
    plan = estimator.plan_reference(
        space,
        model,
        _list_matrix(reference.column(EMBEDDING_COL)),
        encode_labels(check_labels(labels, "y_train", n_rows=labels.size), classes, "y_train"),
        reference.column("ecoval_cluster").to_numpy().astype(np.int64),
        reference.column("ecoval_draw").to_numpy().astype(np.int64),
        sizes=counts.sum(axis=1),
        X_val=check_features(X_val, "X_val", n_features=X_sample.shape[1]),
        y_val=encode_labels(check_labels(y_val, "y_val", n_rows=len(y_val)), classes, "y_val"),
        classes=classes,
    )
    return plan, reference.column(key).combine_chunks().cast(source.key_type())


def spark_row_inputs(
    spark: SparkSession, source: RowSource, model: Path, out: Path, *, only_new: bool
) -> NDArray[np.float64]:
    """The first row pass on the executors (:func:`~ecoval_ops.lakehouse.row_values.input_batch` in ``mapInPandas``).

    Writes the inputs as Parquet in ``out``; returns the per-cluster sums of ``x_i`` over the
    training rows (one aggregate job).
    """
    from pyspark.sql import functions as sf

    from ecoval_ops.lakehouse.row_values import INPUT_COLUMNS, TRAINING_COL, input_batch
    from ecoval_ops.valuation import EcoVal

    key = check_identifier(source.columns.key, "key column")
    label = check_identifier(source.columns.label, "label column")
    state, stamp = str(model), _stamp(model)
    frame = rows_frame(spark, source, only_new=only_new)
    key_type, label_type = (frame.schema[c].dataType.simpleString() for c in (key, label))
    types = f"{key} {key_type}, ecoval_support {label_type}"

    def inputs(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ev = _load_state(state, stamp)
        for part in parts:
            if not len(part):
                continue
            keys = part[key].to_numpy()
            training = np.zeros(len(part), bool) if only_new else ~source.held_out(keys)
            yield input_batch(ev, keys, _matrix(part), part[label].to_numpy(), training, key=key).to_pandas()

    columns = ", ".join(f"{name} {kind}" for name, kind in INPUT_COLUMNS.items())
    frame.mapInPandas(inputs, f"{types}, {columns}").write.mode("overwrite").parquet(str(out))
    sums = np.zeros(EcoVal.load(model).n_clusters_)
    x = sf.col("ecoval_intrinsic") * sf.col("ecoval_extrinsic")
    written = spark.read.parquet(str(out)).filter(sf.col(TRAINING_COL))
    for r in written.groupBy("ecoval_cluster").agg(sf.sum(x)).collect():
        sums[r[0]] = r[1]
    return sums


def spark_values(
    spark: SparkSession, key: str, inputs: Path, model: Path, out: Path, *, run_id: str, model_version: str
) -> None:
    """The second row pass on the executors: the value columns of the inputs.

    :func:`~ecoval_ops.lakehouse.row_values.value_batch` in ``mapInPandas``; Parquet in ``out``.
    """
    import pyarrow as pa

    from ecoval_ops.lakehouse.columns import value_schema
    from ecoval_ops.lakehouse.row_values import value_batch

    key = check_identifier(key, "key column")
    state, stamp = str(model), _stamp(model)
    valued_at = datetime.now(UTC)
    frame = spark.read.parquet(str(inputs))
    label_type = frame.schema["ecoval_support"].dataType.simpleString()

    def values(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ev = _load_state(state, stamp)
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
    frame.mapInPandas(values, f"{key} {key_type}, {fields}").write.mode("overwrite").parquet(str(out))


def _stamp(path: Path) -> int:
    """When the saved state was written (a state rewritten at the same path is loaded again)."""
    return (path / "state.npz").stat().st_mtime_ns


@lru_cache(maxsize=2)
def _load_state(path: str, stamp: int) -> EcoVal:
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
