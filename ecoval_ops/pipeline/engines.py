"""The two engines of a run: who embeds, clusters, propagates and writes (architecture.md).

Both engines run the same checks (:func:`check_source`, :func:`read_rows`), value with the
same EcoVal code and write one MERGE with the same checks (``prepare_values``); they differ in
where the work runs:

- :class:`DeltaRsEngine`: in-process with delta-rs, numpy and torch (no JVM);
- :class:`SparkEngine`: embeddings in Arrow batches (``mapInPandas``), MLlib k-means on large
  tables, per-cluster propagation with ``groupBy(cluster).applyInPandas``, delta-spark writes.

Rows are read by delta-rs into numpy for the fit in either engine (a million 64-d embeddings
are 0.5 GB), always sorted by key, so both engines see the same rows in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.lakehouse import ensure_value_columns, merge_values, open_table
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.embedders import Embedder
from ecoval_ops.process import fault_point

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from ecoval_ops.valuation.protocols import Clusterer

__all__ = [
    "DeltaRsEngine",
    "Engine",
    "Rows",
    "SparkEngine",
    "check_source",
    "embedding_columns",
    "embedding_matrix",
    "engine_for",
    "read_rows",
]


@dataclass(frozen=True)
class Rows:
    """The rows of a table version that a run needs, validated and sorted by key.

    Attributes:
        version: the table version read.
        keys: ``(n,)`` row keys, ascending.
        X: ``(n, d)`` float embeddings.
        y: ``(n,)`` labels.
        valued: ``(n,)`` whether a run already valued the row.
        table_rows: rows in the table version (more than ``n`` when only new rows were read).
    """

    version: int
    keys: NDArray[np.generic]
    X: NDArray[np.float64]
    y: NDArray[np.generic]
    valued: NDArray[np.bool_]
    table_rows: int


def embedding_columns(cfg: RunConfig) -> list[str]:
    """The source columns the embedding comes from."""
    if cfg.features is not None:
        return list(cfg.features)
    return [cfg.embedding_col or cfg.image_col or ""]


def _where(path: str | Path, version: int) -> str:
    return f"{path}@v{version}"


def check_source(cfg: RunConfig, path: str | Path, version: int) -> pa.Table:
    """Check the columns, keys and labels of a source version; return its key and label columns.

    Runs before anything is written, so bad input leaves every table as it was.

    Raises:
        InvalidInputError: missing columns, an empty table, null keys or labels, duplicate
            keys; each message names the column and the table version.
    """
    import pyarrow.compute as pc

    table = open_table(path, version)
    where = _where(path, version)
    names = set(table.schema().to_arrow().names)
    wanted = [cfg.key, cfg.label, *embedding_columns(cfg)]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InvalidInputError(f"{where} has no column(s) {missing}; it has {sorted(names)}")
    data = table.to_pyarrow_table(
        columns=[cfg.key, cfg.label, *(["ecoval_run_id"] if "ecoval_run_id" in names else [])]
    )
    if data.num_rows == 0:
        raise InvalidInputError(f"{where} is empty: there are no rows to value")
    for column in (cfg.key, cfg.label):
        nulls = data.column(column).null_count
        if nulls:
            raise InvalidInputError(f"column {column!r} of {where} has {nulls} null values")
    distinct = pc.count_distinct(data.column(cfg.key)).as_py()
    if distinct != data.num_rows:
        raise InvalidInputError(f"key column {cfg.key!r} of {where} has {data.num_rows - distinct} duplicate keys")
    return data


def embedding_matrix(column: pa.ChunkedArray | pa.Array, name: str, where: str) -> NDArray[np.float64]:
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
    if len(column) == 0:
        return np.zeros((0, 0))
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


def _check_finite(cfg: RunConfig, X: NDArray[np.float64], where: str) -> None:
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    first = int(np.flatnonzero(bad.any(axis=0))[0])
    if cfg.features is not None:
        raise InvalidInputError(
            f"feature column {cfg.features[first]!r} of {where} has {int(bad[:, first].sum())} "
            "null, NaN or infinite values"
        )
    raise InvalidInputError(
        f"embedding of {embedding_columns(cfg)[0]!r} in {where} has {int(bad.any(axis=1).sum())} rows with NaN or "
        f"infinite entries (first at dimension {first})"
    )


def read_rows(
    cfg: RunConfig,
    *,
    embeddings: Path | None,
    path: str | Path | None = None,
    version: int | None = None,
    only_new: bool = False,
) -> Rows:
    """The validated rows of a source version with their embeddings, sorted by key.

    Args:
        cfg: the run configuration.
        embeddings: the embeddings table, or None when ``cfg.embedding_col`` holds them.
        path: the source table; default ``cfg.table``.
        version: the version to read; default the latest.
        only_new: only the rows no run has valued (``ecoval_run_id IS NULL``), filtered in the
            Parquet scan, so an incremental night reads what is new rather than the table.

    Raises:
        InvalidInputError: the checks of :func:`check_source`, rows without an embedding,
            embeddings with NaN or infinite entries.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    source = path or cfg.table
    version = int(open_table(source).version()) if version is None else version
    where = _where(source, version)
    checked = check_source(cfg, source, version)
    has_runs = "ecoval_run_id" in checked.column_names
    columns = [cfg.key, cfg.label, *(["ecoval_run_id"] if has_runs else [])]
    if embeddings is None:
        columns.append(cfg.embedding_col or "")
    table = open_table(source, version)
    if only_new and has_runs:
        data = table.to_pyarrow_dataset().to_table(columns=columns, filter=ds.field("ecoval_run_id").is_null())
        if data.num_rows != checked.column("ecoval_run_id").null_count:
            # Files written before the value columns were added lack the column, and the pushed-down
            # filter drops their rows; filter after a full read instead.
            full = table.to_pyarrow_table(columns=columns)
            data = full.filter(pc.is_null(full.column("ecoval_run_id")))
    elif embeddings is None:
        data = table.to_pyarrow_table(columns=columns)
    else:
        data = checked
    if embeddings is None:
        X = embedding_matrix(data.column(cfg.embedding_col or ""), cfg.embedding_col or "", where)
    else:
        emb = open_table(embeddings).to_pyarrow_table(columns=[cfg.key, EMBEDDING_COL])
        index = pc.index_in(data.column(cfg.key), value_set=emb.column(cfg.key))
        if index.null_count:
            raise InvalidInputError(f"{index.null_count} rows of {where} have no embedding in {embeddings}")
        X = embedding_matrix(emb.column(EMBEDDING_COL).take(index), EMBEDDING_COL, where)
    _check_finite(cfg, X, where)
    order = np.argsort(data.column(cfg.key).to_numpy(zero_copy_only=False), kind="stable")
    valued = (
        data.column("ecoval_run_id").is_valid().to_numpy(zero_copy_only=False)
        if has_runs
        else np.zeros(data.num_rows, bool)
    )
    return Rows(
        version=version,
        keys=data.column(cfg.key).to_numpy(zero_copy_only=False)[order],
        X=X[order],
        y=data.column(cfg.label).to_numpy(zero_copy_only=False)[order],
        valued=np.asarray(valued, dtype=bool)[order],
        table_rows=checked.num_rows,
    )


def _new_keys(source: pa.Table, key: str, target: Path) -> pa.Table:
    """The rows of ``source`` whose key is not yet in the embeddings table ``target``."""
    import pyarrow.compute as pc

    if not (target / "_delta_log").exists():
        return source
    done = open_table(target).to_pyarrow_table(columns=[key]).column(key)
    return source.filter(pc.invert(pc.is_in(source.column(key), value_set=done)))


def _embed_app_id(target: Path) -> str:
    return f"ecoval-embed-{target.name}"


def embedded_through(target: Path) -> int | None:
    """The newest source version whose rows the embeddings table ``target`` holds."""
    if not (target / "_delta_log").exists():
        return None
    version = open_table(target).transaction_version(_embed_app_id(target))
    return None if version is None else int(version)


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


def _append_embeddings(target: Path, table: pa.Table, version: int) -> None:
    from deltalake import CommitProperties, Transaction, write_deltalake

    write_deltalake(
        str(target),
        table,
        mode="append",
        commit_properties=CommitProperties(app_transactions=[Transaction(_embed_app_id(target), version)]),
    )


class DeltaRsEngine:
    """In-process engine: delta-rs reads and writes, numpy/torch compute (no JVM)."""

    def embed(self, cfg: RunConfig, source: str | Path, version: int, embedder: Embedder, target: Path) -> int:
        """See :class:`Engine`."""
        import pyarrow as pa

        done = embedded_through(target)
        if done is not None and done >= version:
            return 0
        data = open_table(source, version).to_pyarrow_table(columns=[cfg.key, *embedder.columns])
        todo = _new_keys(data, cfg.key, target)
        parts = [embedder.embed(batch.to_pandas()) for batch in todo.to_batches(max_chunksize=4096) if batch.num_rows]
        X = np.concatenate(parts) if parts else np.zeros((0, 1))
        embeddings = pa.table(
            {
                cfg.key: todo.column(cfg.key),
                EMBEDDING_COL: pa.array(list(X), pa.list_(pa.float64()))
                if len(X)
                else pa.array([], pa.list_(pa.float64())),
            }
        )
        _append_embeddings(target, embeddings, version)
        return int(todo.num_rows)

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

        ensure_value_columns(cfg.table)
        fault_point("columns_added")
        return merge_values(cfg.table, pq.read_table(values), key=cfg.key, run_id=run_id, source_version=source_version)


class SparkEngine:
    """Spark engine: embeddings with ``mapInPandas``, MLlib k-means, ``applyInPandas`` propagation.

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

    def embed(self, cfg: RunConfig, source: str | Path, version: int, embedder: Embedder, target: Path) -> int:
        """See :class:`Engine`."""
        from ecoval_ops.lakehouse.spark_engine import embed_rows

        done = embedded_through(target)
        if done is not None and done >= version:
            return 0
        return embed_rows(
            self._session(),
            str(source),
            version,
            embedder,
            key=cfg.key,
            target=str(target),
            app_id=_embed_app_id(target),
            target_exists=(target / "_delta_log").exists(),
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

        ensure_value_columns(cfg.table)
        fault_point("columns_added")
        return merge_values_spark(
            self._session(), cfg.table, values, key=cfg.key, run_id=run_id, source_version=source_version
        )


def engine_for(cfg: RunConfig, **options: Any) -> Engine:
    """The engine ``cfg.engine`` names."""
    if cfg.engine == "delta-rs":
        return DeltaRsEngine()
    if cfg.engine == "spark":
        return SparkEngine(**options)
    raise EcovalError(f"unknown engine {cfg.engine!r}")
