"""The two engines of a run: where rows are read and values written (architecture.md).

Both engines read a pinned table version, validate with :func:`rows_from_arrow` (the same
checks and messages), value with the same EcoVal code, and write one MERGE with the same checks
(``prepare_values``); they differ in the reader, the clusterer and the writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.lakehouse import ensure_value_columns, merge_values, open_table

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from ecoval_ops.valuation.protocols import Clusterer

__all__ = [
    "DeltaRsEngine",
    "Engine",
    "Rows",
    "SparkEngine",
    "columns_present",
    "embedding_columns",
    "embedding_matrix",
    "engine_for",
    "rows_from_arrow",
]


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


def embedding_columns(cfg: RunConfig) -> list[str]:
    """The columns the embedder reads: the feature columns, or the embedding column."""
    if cfg.features is not None:
        return list(cfg.features)
    if cfg.embedding_col is not None:
        return [cfg.embedding_col]
    raise EcovalError(
        "the torchvision image embedder is not wired into `ecoval run` yet; use --features or --embedding-col"
    )


def columns_present(cfg: RunConfig, names: set[str], where: str) -> list[str]:
    """The columns a run reads, after checking the table has them."""
    wanted = [cfg.key, cfg.label, *embedding_columns(cfg)]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InvalidInputError(f"{where} has no column(s) {missing}; it has {sorted(names)}")
    return wanted


def embedding_matrix(column: pa.ChunkedArray, name: str, where: str) -> NDArray[np.float64]:
    """``(n, d)`` float64 from a list column of embeddings, every row of the same length.

    Raises:
        InvalidInputError: null embeddings, embeddings of different lengths, or a column that
            does not hold numeric lists.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)
    ):
        raise InvalidInputError(f"embedding column {name!r} of {where} holds {column.type}, not numeric arrays")
    if column.null_count:
        raise InvalidInputError(f"embedding column {name!r} of {where} has {column.null_count} null values")
    lengths = pc.unique(pc.list_value_length(column)).to_pylist()
    if len(lengths) != 1 or not lengths[0]:
        raise InvalidInputError(
            f"embeddings in {name!r} of {where} must share one non-zero length; found {sorted(lengths)}"
        )
    try:
        flat = pc.list_flatten(column).cast(pa.float64()).fill_null(float("nan"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"embedding column {name!r} of {where} must hold numbers: {e}") from e
    return np.asarray(flat.to_numpy(), dtype=np.float64).reshape(len(column), int(lengths[0]))


def rows_from_arrow(cfg: RunConfig, version: int, where: str, data: pa.Table, X: NDArray[np.float64]) -> Rows:
    """Validate what an engine read and build :class:`Rows` (the checks both engines share).

    Args:
        cfg: the run configuration.
        version: the table version read.
        where: ``path@vN`` for messages.
        data: key and label columns, and ``ecoval_run_id`` when the table has it.
        X: ``(n, d)`` embeddings built from ``cfg.features`` (nulls as NaN).

    Raises:
        InvalidInputError: an empty table, nulls in key or label, duplicate keys, or null / NaN /
            infinite features, each naming the column and the table version.
    """
    import pyarrow.compute as pc

    if data.num_rows == 0:
        raise InvalidInputError(f"{where} is empty: there are no rows to value")
    for column in (cfg.key, cfg.label):
        nulls = data.column(column).null_count
        if nulls:
            raise InvalidInputError(f"column {column!r} of {where} has {nulls} null values")
    keys = data.column(cfg.key)
    distinct = pc.count_distinct(keys).as_py()
    if distinct != data.num_rows:
        raise InvalidInputError(f"key column {cfg.key!r} of {where} has {data.num_rows - distinct} duplicate keys")
    bad = ~np.isfinite(X)
    if bad.any():
        first = int(np.flatnonzero(bad.any(axis=0))[0])
        if cfg.features is not None:
            raise InvalidInputError(
                f"feature column {cfg.features[first]!r} of {where} has {int(bad[:, first].sum())} "
                "null, NaN or infinite values"
            )
        raise InvalidInputError(
            f"embedding column {cfg.embedding_col!r} of {where} has {int(bad.any(axis=1).sum())} rows with NaN or "
            f"infinite entries (first at dimension {first})"
        )
    names = data.column_names
    valued = (
        data.column("ecoval_run_id").is_valid().to_numpy(zero_copy_only=False) if "ecoval_run_id" in names else None
    )
    return Rows(
        version=version,
        keys=keys.to_numpy(zero_copy_only=False),
        X=X,
        y=data.column(cfg.label).to_numpy(zero_copy_only=False),
        valued=np.zeros(data.num_rows, bool) if valued is None else np.asarray(valued, dtype=bool),
    )


def _read_rows_delta_rs(cfg: RunConfig, path: str | None = None) -> Rows:
    table = open_table(path or cfg.table)
    version = int(table.version())
    where = f"{path or cfg.table}@v{version}"
    names = set(table.schema().to_arrow().names)
    wanted = columns_present(cfg, names, where)
    data = table.to_pyarrow_table(columns=wanted + (["ecoval_run_id"] if "ecoval_run_id" in names else []))
    if cfg.embedding_col is not None:
        X = embedding_matrix(data.column(cfg.embedding_col), cfg.embedding_col, where)
        return rows_from_arrow(cfg, version, where, data, X)
    try:
        X = np.column_stack(
            [data.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in cfg.features or ()]
        )
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"feature columns {list(cfg.features or ())} of {where} must be numeric: {e}") from e
    return rows_from_arrow(cfg, version, where, data, X)


class Engine(Protocol):
    """Reads the rows of a run and writes its values."""

    def read_rows(self, cfg: RunConfig, path: str | None = None) -> Rows:
        """The validated rows of the latest version of ``path`` (default ``cfg.table``)."""
        ...

    def write_values(self, cfg: RunConfig, values: pa.Table, *, run_id: str, source_version: int) -> int | None:
        """Add the value columns once, then one idempotent MERGE; None if already written."""
        ...

    def clusterer(self, n_rows: int) -> Clusterer | None:
        """The clusterer EcoVal uses for ``n_rows`` training rows (None: scikit-learn k-means)."""
        ...


class DeltaRsEngine:
    """In-process engine: delta-rs reads and writes, numpy/torch compute (no JVM)."""

    def read_rows(self, cfg: RunConfig, path: str | None = None) -> Rows:
        """See :class:`Engine`."""
        return _read_rows_delta_rs(cfg, path)

    def write_values(self, cfg: RunConfig, values: pa.Table, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        ensure_value_columns(cfg.table)
        return merge_values(cfg.table, values, key=cfg.key, run_id=run_id, source_version=source_version)

    def clusterer(self, n_rows: int) -> Clusterer | None:
        """See :class:`Engine`."""
        return None


class SparkEngine:
    """Spark engine: Spark reads and embeds, MLlib clusters, delta-spark writes.

    Spark reads a pinned version and builds the embeddings in Arrow batches (``mapInPandas``).

    Tables with fewer than ``mllib_min_rows`` training rows are clustered on the driver by the
    same scikit-learn k-means as the delta-rs engine (an MLlib job costs more than the whole
    clustering there), so both engines give the same values on such tables; larger ones are
    clustered by MLlib.

    Args:
        spark: a session; ``None`` starts the embedded one (``local[*]`` with Delta).
        mllib_min_rows: training rows from which MLlib clusters. Default 50_000.
    """

    def __init__(self, spark: SparkSession | None = None, *, mllib_min_rows: int = 50_000) -> None:
        self.spark = spark
        self.mllib_min_rows = mllib_min_rows

    def _session(self) -> SparkSession:
        if self.spark is None:
            from ecoval_ops.lakehouse.spark import spark_session

            self.spark = spark_session()
        return self.spark

    def read_rows(self, cfg: RunConfig, path: str | None = None) -> Rows:
        """See :class:`Engine`."""
        from pyspark.sql.types import NumericType

        from ecoval_ops.lakehouse.spark_engine import EMBEDDING_COL, embed_features

        uri = str(path or cfg.table)
        version = int(open_table(uri).version())
        where = f"{uri}@v{version}"
        frame = self._session().read.format("delta").option("versionAsOf", version).load(uri)
        names = set(frame.columns)
        columns_present(cfg, names, where)
        not_numeric = [
            f.name
            for f in frame.schema.fields
            if f.name in (cfg.features or ()) and not isinstance(f.dataType, NumericType)
        ]
        if not_numeric:
            raise InvalidInputError(f"feature columns {not_numeric} of {where} must be numeric")
        keep = [cfg.key, cfg.label, *(["ecoval_run_id"] if "ecoval_run_id" in names else [])]
        if cfg.embedding_col is not None:
            embedded = frame.select(*keep, frame[cfg.embedding_col].alias(EMBEDDING_COL))
        else:
            embedded = embed_features(frame, cfg.features or (), keep=keep)
        data = embedded.toArrow()
        X = embedding_matrix(data.column(EMBEDDING_COL), cfg.embedding_col or EMBEDDING_COL, where)
        return rows_from_arrow(cfg, version, where, data.drop_columns([EMBEDDING_COL]), X)

    def write_values(self, cfg: RunConfig, values: pa.Table, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.delta_spark import merge_values_spark

        ensure_value_columns(cfg.table)
        return merge_values_spark(
            self._session(), cfg.table, values, key=cfg.key, run_id=run_id, source_version=source_version
        )

    def clusterer(self, n_rows: int) -> Clusterer | None:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.spark_engine import SparkKMeansClusterer

        return SparkKMeansClusterer(self._session()) if n_rows >= self.mllib_min_rows else None


def engine_for(cfg: RunConfig, **options: Any) -> Engine:
    """The engine ``cfg.engine`` names."""
    if cfg.engine == "delta-rs":
        return DeltaRsEngine()
    if cfg.engine == "spark":
        return SparkEngine(**options)
    raise EcovalError(f"unknown engine {cfg.engine!r}")
