"""Reads and checks of a source table version (architecture.md, steps 1 and 3).

:func:`check_source` checks a version before anything is written (so bad input leaves every
table as it was) by streaming its batches through :class:`~ecoval_ops.lakehouse.checks.SourcePass`,
the pass the Spark engine runs on its executors. The delta-rs engine reads the rows a run values
in-process through :func:`read_rows`: checked, joined to their embeddings, sorted by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError, MissingColumnError
from ecoval_ops.keys import check_key_type
from ecoval_ops.lakehouse.batches import BATCH_ROWS, run_local
from ecoval_ops.lakehouse.checks import (
    SourceCheck,
    SourcePass,
    check_counts,
    check_duplicates,
    local_duplicates,
)
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.tables import TableLike, open_table
from ecoval_ops.storage import TableRef
from ecoval_ops.valuation.reference import holdout_mask

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "RowSource",
    "Rows",
    "SourceColumns",
    "check_schema",
    "check_seen_labels",
    "check_source",
    "embedding_matrix",
    "label_classes",
    "non_finite_error",
    "read_rows",
    "require_columns",
    "rows_of",
    "unvalued_batches",
    "valued_keys",
]


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
        return _where(self.table, self.version)

    def key_type(self) -> pa.DataType:
        """The Arrow type of the key column in the pinned version (what saved keys are cast to)."""
        import pyarrow as pa

        return pa.schema(open_table(self.table, self.version).schema().to_arrow()).field(self.columns.key).type

    def held_out(self, keys: NDArray[np.generic]) -> NDArray[np.bool_]:
        """Which rows are held out for validation."""
        if self.validation_fraction is None:
            return np.zeros(len(keys), bool)
        return holdout_mask(keys, self.validation_fraction)


def _where(path: TableLike, version: int) -> str:
    return f"{path}@v{version}"


def check_schema(columns: SourceColumns, path: TableLike, version: int) -> pa.Schema:
    """The schema of ``path@version``, checked to hold the columns a run reads and a key of a supported type.

    Reads the table's metadata only.

    Raises:
        MissingColumnError: a column the run reads is not in the table.
        InvalidInputError: a key column of a type that cannot key a run
            (:func:`~ecoval_ops.keys.check_key_type`).
    """
    import pyarrow as pa

    where = _where(path, version)
    schema = pa.schema(open_table(path, version).schema().to_arrow())
    missing = [c for c in (columns.key, columns.label, *columns.embedding_columns) if c not in schema.names]
    if missing:
        raise MissingColumnError(f"{where} has no column(s) {missing}; it has {sorted(schema.names)}")
    check_key_type(schema.field(columns.key).type, columns.key, where)
    return schema


def check_source(
    columns: SourceColumns, path: TableLike, version: int, *, fraction: float | None = None
) -> SourceCheck:
    """Check the columns, keys and labels of a source version in-process, streaming its batches.

    Runs before anything is written, so bad input leaves every table as it was. The Spark engine
    runs the same :class:`~ecoval_ops.lakehouse.checks.SourcePass` on its executors.

    Args:
        columns: the columns the run reads.
        path: the source table.
        version: the version to check.
        fraction: the hold-out fraction whose rows are counted; None counts none.

    Raises:
        MissingColumnError, InvalidInputError: see :func:`check_schema`; an empty table, null
            keys or labels.
        DuplicateKeyError: duplicate keys.
        Each message names the column and the table version.
    """
    where = _where(path, version)
    schema = check_schema(columns, path, version)
    step = SourcePass(columns.key, columns.label, schema.field(columns.label).type, fraction)
    scan = open_table(path, version).to_pyarrow_dataset()
    check = run_local(step, scan.to_batches(columns=list(step.columns), batch_size=BATCH_ROWS))
    check_counts(check, key=columns.key, label=columns.label, where=where)
    check_duplicates(local_duplicates(scan, columns.key), key=columns.key, where=where)
    return check


def label_classes(check: SourceCheck, label: str, where: str) -> pa.Array:
    """The distinct labels of a checked source version, sorted.

    Raises:
        InvalidInputError: a single class: valuation needs at least 2.
    """
    classes = check.labels.column(label).combine_chunks()
    if len(classes) < 2:
        raise InvalidInputError(
            f"label column {label!r} of {where} has a single class ({classes[0].as_py()!r}); valuation needs at least 2"
        )
    return classes


def check_seen_labels(check: SourceCheck, label: str, classes: pa.Array, where: str, training: str) -> None:
    """Check that every label of the checked version ``where`` is one of the training ``classes``.

    Raises:
        InvalidInputError: labels unseen in ``training``, with their rows and up to 5 of them.
    """
    import pyarrow.compute as pc

    labels = check.labels
    unseen = labels.filter(
        pc.invert(pc.is_in(labels.column(label), value_set=classes.cast(labels.schema.field(label).type)))
    )
    if unseen.num_rows:
        rows = int(pc.sum(unseen.column("rows")).as_py())
        shown = sorted(unseen.column(label).to_pylist(), key=str)[:5]
        raise InvalidInputError(f"{where} has {rows} rows with labels not in {training}: {shown}")


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


def _check_finite(columns: SourceColumns, X: NDArray[np.float64], where: str) -> None:
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    first = int(np.flatnonzero(bad.any(axis=0))[0])
    raise non_finite_error(columns, where, first, int(bad[:, first].sum()), int(bad.any(axis=1).sum()))


def non_finite_error(columns: SourceColumns, where: str, first: int, in_first: int, rows: int) -> InvalidInputError:
    """The error of embeddings with null, NaN or infinite entries, naming the feature column when there is one.

    Args:
        columns: the columns the run reads.
        where: the table version.
        first: the first dimension with such entries.
        in_first: rows with one in that dimension.
        rows: rows with one anywhere.
    """
    if columns.features is not None:
        return InvalidInputError(
            f"feature column {columns.features[first]!r} of {where} has {in_first} null, NaN or infinite values"
        )
    return InvalidInputError(
        f"embedding of {columns.embedding_columns[0]!r} in {where} has {rows} rows with NaN or "
        f"infinite entries (first at dimension {first})"
    )


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
    where = _where(source, version)
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
    _check_finite(columns, X, where)
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


def require_columns(path: TableLike, version: int, columns: tuple[str, ...]) -> None:
    """Check that ``path@version`` has ``columns``.

    Raises:
        MissingColumnError: naming the columns it lacks and the table version.
    """
    names = set(open_table(path, version).schema().to_arrow().names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise MissingColumnError(f"{_where(path, version)} has no column(s) {missing}")


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
