"""Reads of a source table version (architecture.md, step 3): the columns a run reads, and its rows.

The delta-rs engine reads the rows a run values in-process through :func:`read_rows`: checked
(:mod:`.source_checks`), joined to their embeddings, sorted by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse.batches import BATCH_ROWS
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.source_checks import check_finite, check_source, embedding_matrix, require_columns, where_of
from ecoval_ops.lakehouse.tables import TableLike, open_table
from ecoval_ops.storage import TableRef
from ecoval_ops.valuation.reference import holdout_mask

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RowSource", "Rows", "SourceColumns", "read_rows", "rows_of", "unvalued_batches", "valued_keys"]


@dataclass(frozen=True)
class SourceColumns:
    """The columns a run reads from a source table (identifiers checked by the caller).

    Attributes:
        key: row-key column.
        label: label column.
        features: numeric feature columns (the ``features`` embedder), or None.
        embedding_col: a column of precomputed embedding vectors, or None.
        image_col: a column of images, or None.
    """

    key: str
    label: str
    features: tuple[str, ...] | None = None
    embedding_col: str | None = None
    image_col: str | None = None

    @property
    def embedding_columns(self) -> list[str]:
        """The source columns the embedding comes from."""
        if self.features is not None:
            return list(self.features)
        return [self.embedding_col or self.image_col or ""]


@dataclass(frozen=True)
class Rows:
    """The rows of a table version that a run needs, validated and sorted by key.

    Attributes:
        version: the table version read.
        keys: ``(n,)`` row keys, ascending.
        X: ``(n, d)`` float embeddings.
        y: ``(n,)`` labels.
    """

    version: int
    keys: NDArray[np.generic]
    X: NDArray[np.float64]
    y: NDArray[np.generic]


@dataclass(frozen=True)
class RowSource:
    """Where a run's rows lie and how they are split, as explicit values (the pipeline pins them).

    Attributes:
        columns: the columns read (key, label, embedding column or features).
        table: the source Delta table.
        version: its pinned version.
        embeddings: the embeddings table, or None when ``columns.embedding_col`` holds them.
        values_table: the separate values table, or None when the source holds the values.
        values_version: its pinned version (None before it exists).
        validation_fraction: the share held out by key hash; None with a validation table.
        seed: the run's seed (the reference draws).
    """

    columns: SourceColumns
    table: TableRef
    version: int
    embeddings: TableLike | None
    values_table: TableRef | None
    values_version: int | None
    validation_fraction: float | None
    seed: int

    @property
    def where(self) -> str:
        """The table version, as errors name it."""
        return where_of(self.table, self.version)

    def key_type(self) -> pa.DataType:
        """The Arrow type of the key column in the pinned version (what saved keys are cast to)."""
        import pyarrow as pa

        return pa.schema(open_table(self.table, self.version).schema().to_arrow()).field(self.columns.key).type

    def held_out(self, keys: NDArray[np.generic]) -> NDArray[np.bool_]:
        """Which rows are held out for validation."""
        if self.validation_fraction is None:
            return np.zeros(len(keys), bool)
        return holdout_mask(keys, self.validation_fraction)


def read_rows(
    columns: SourceColumns,
    source: TableLike,
    *,
    embeddings: TableLike | None,
    version: int | None = None,
    only_new: bool = False,
    valued: pa.Array | None = None,
) -> Rows:
    """The validated rows of a source version with their embeddings, sorted by key (in-process).

    Args:
        columns: the columns the run reads.
        source: the source table.
        embeddings: the embeddings table, or None when ``columns.embedding_col`` holds them.
        version: the version to read; default the latest.
        only_new: only the rows no run has valued (:func:`unvalued_batches`).
        valued: the keys already valued, when the values live in a separate values table
            (:func:`valued_keys`); None reads ``ecoval_run_id`` of the source.

    Raises:
        InvalidInputError: the checks of :func:`check_source`, rows without an embedding,
            embeddings with NaN or infinite entries.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    version = int(open_table(source).version()) if version is None else version
    where = where_of(source, version)
    check_source(columns, source, version)
    names = [columns.key, columns.label, *([columns.embedding_col or ""] if embeddings is None else [])]
    scan = open_table(source, version).to_pyarrow_dataset()
    if only_new:
        schema = pa.schema([scan.schema.field(n) for n in names])
        data = pa.Table.from_batches(list(unvalued_batches(source, version, names, valued=valued)), schema=schema)
    else:
        data = scan.to_table(columns=names)
    if embeddings is None:
        X = embedding_matrix(data.column(columns.embedding_col or ""), columns.embedding_col or "", where)
    else:
        emb = open_table(embeddings).to_pyarrow_table(columns=[columns.key, EMBEDDING_COL])
        index = pc.index_in(data.column(columns.key), value_set=emb.column(columns.key))
        if index.null_count:
            raise InvalidInputError(f"{index.null_count} rows of {where} have no embedding in {embeddings}")
        X = embedding_matrix(emb.column(EMBEDDING_COL).take(index), EMBEDDING_COL, where)
    check_finite(columns, X, where)
    order = np.argsort(data.column(columns.key).to_numpy(zero_copy_only=False), kind="stable")
    return Rows(
        version=version,
        keys=data.column(columns.key).to_numpy(zero_copy_only=False)[order],
        X=X[order],
        y=data.column(columns.label).to_numpy(zero_copy_only=False)[order],
    )


def unvalued_batches(
    path: TableLike, version: int, columns: list[str], *, valued: pa.Array | None
) -> Iterator[pa.RecordBatch]:
    """``columns`` (the key first) of the rows of ``path@version`` no run has valued, batch by batch.

    Args:
        path: the source table.
        version: its version.
        columns: the columns wanted, the key column first.
        valued: the keys a separate values table holds (:func:`valued_keys`); None reads the
            source's ``ecoval_run_id`` (every row is new when it has none).
    """
    import pyarrow.compute as pc

    scan = open_table(path, version).to_pyarrow_dataset()
    runs = valued is None and "ecoval_run_id" in scan.schema.names
    read = [*columns, *(["ecoval_run_id"] if runs else [])]
    for batch in scan.to_batches(columns=read, batch_size=BATCH_ROWS):
        if valued is not None:
            batch = batch.filter(pc.invert(_held(batch.column(0), valued)))
        elif runs:
            batch = batch.filter(pc.is_null(batch.column("ecoval_run_id")))
        yield batch.select(columns)


def _held(keys: pa.Array | pa.ChunkedArray, valued: pa.Array) -> pa.Array | pa.ChunkedArray:
    """Which ``keys`` are in ``valued`` (none when it is empty, whatever its type)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(valued) == 0:
        return pa.array(np.zeros(len(keys), bool))
    return pc.is_in(keys, value_set=valued)


def rows_of(path: TableLike, version: int | None, key: str, columns: tuple[str, ...] | None, keys: Any) -> pa.Table:
    """``key`` and ``columns`` of the rows of ``path@version`` whose key is in ``keys``.

    The key filter is pushed into the Parquet scan, so a few rows cost a few rows, not the table
    (integer keys also prune files and row groups by their statistics).

    Args:
        path: the table.
        version: its version; None reads the latest.
        key: the key column.
        columns: the columns wanted besides ``key``; None reads every column.
        keys: the keys wanted (cast to the key column's type).

    Raises:
        MissingColumnError: ``key`` or a column of ``columns`` is not in the table.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    table = open_table(path, version)
    wanted = (key,) if columns is None else (key, *(c for c in columns if c != key))
    require_columns(path, int(table.version()), wanted)
    scan = table.to_pyarrow_dataset()
    key_type = scan.schema.field(key).type
    value_set = pa.array(np.asarray(keys)).cast(key_type)
    field = ds.field(key)
    if not pa.types.is_integer(key_type):
        # delta-rs rewrites string columns as string_view in the files a MERGE touches, and
        # pyarrow cannot compare those files' statistics with a string value set (no kernel):
        # the cast filters each batch after it is read instead of pruning by statistics.
        field = field.cast(key_type)
    return scan.to_table(columns=None if columns is None else list(wanted), filter=field.isin(value_set))


def valued_keys(values_table: TableLike, version: int | None, key: str) -> pa.Array:
    """The keys a separate values table holds values for at ``version`` (none before it exists)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if version is None:
        return pa.array([])
    data = open_table(values_table, version).to_pyarrow_table(columns=[key, "ecoval_run_id"])
    return data.filter(pc.is_valid(data.column("ecoval_run_id"))).column(key).combine_chunks()
