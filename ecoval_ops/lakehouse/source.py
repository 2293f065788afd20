"""Reads and checks of a source table version (architecture.md, steps 1 and 3).

Both engines read the rows a run values through :func:`read_rows`: checked by
:func:`check_source` before anything is written (so bad input leaves every table as it was),
joined to their embeddings, sorted by key, so both engines see the same rows in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import DuplicateKeyError, InvalidInputError, MissingColumnError
from ecoval_ops.keys import check_key_type
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.split import holdout_mask
from ecoval_ops.lakehouse.tables import open_table

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "RowSource",
    "Rows",
    "SourceColumns",
    "check_seen_labels",
    "check_source",
    "embedding_matrix",
    "label_classes",
    "non_finite_error",
    "read_rows",
    "require_columns",
    "rows_of",
    "unvalued_keys",
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
        valued: ``(n,)`` whether a run already valued the row.
        table_rows: rows in the table version (more than ``n`` when only new rows were read).
    """

    version: int
    keys: NDArray[np.generic]
    X: NDArray[np.float64]
    y: NDArray[np.generic]
    valued: NDArray[np.bool_]
    table_rows: int


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
    table: Path
    version: int
    embeddings: Path | None
    values_table: Path | None
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


def _where(path: str | Path, version: int) -> str:
    return f"{path}@v{version}"


def check_source(columns: SourceColumns, path: str | Path, version: int) -> pa.Table:
    """Check the columns, keys and labels of a source version; return its key and label columns.

    Runs before anything is written, so bad input leaves every table as it was.

    Args:
        columns: the columns the run reads.
        path: the source table.
        version: the version to check.

    Raises:
        MissingColumnError: a column the run reads is not in the table.
        InvalidInputError: a key column of a type that cannot key a run
            (:func:`~ecoval_ops.keys.check_key_type`), an empty table, null keys or labels.
        DuplicateKeyError: duplicate keys.
        Each message names the column and the table version.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = open_table(path, version)
    where = _where(path, version)
    schema = pa.schema(table.schema().to_arrow())
    names = set(schema.names)
    wanted = [columns.key, columns.label, *columns.embedding_columns]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise MissingColumnError(f"{where} has no column(s) {missing}; it has {sorted(names)}")
    check_key_type(schema.field(columns.key).type, columns.key, where)
    data = table.to_pyarrow_table(
        columns=[columns.key, columns.label, *(["ecoval_run_id"] if "ecoval_run_id" in names else [])]
    )
    if data.num_rows == 0:
        raise InvalidInputError(f"{where} is empty: there are no rows to value")
    for column in (columns.key, columns.label):
        nulls = data.column(column).null_count
        if nulls:
            raise InvalidInputError(f"column {column!r} of {where} has {nulls} null values")
    distinct = pc.count_distinct(data.column(columns.key)).as_py()
    if distinct != data.num_rows:
        raise DuplicateKeyError(f"key column {columns.key!r} of {where} has {data.num_rows - distinct} duplicate keys")
    return data


def label_classes(data: pa.Table, label: str, where: str) -> pa.Array:
    """The distinct labels of a checked source version.

    Raises:
        InvalidInputError: a single class: valuation needs at least 2.
    """
    import pyarrow.compute as pc

    classes = pc.unique(data.column(label))
    if len(classes) < 2:
        raise InvalidInputError(
            f"label column {label!r} of {where} has a single class ({classes[0].as_py()!r}); valuation needs at least 2"
        )
    return classes


def check_seen_labels(labels: pa.ChunkedArray, classes: pa.Array, where: str, training: str) -> None:
    """Check that every label in ``labels`` (of ``where``) is one of the training ``classes``.

    Raises:
        InvalidInputError: labels unseen in ``training``, with their count and up to 5 of them.
    """
    import pyarrow.compute as pc

    unseen = pc.filter(labels, pc.invert(pc.is_in(labels, value_set=classes)))
    if len(unseen):
        shown = sorted({v.as_py() for v in unseen}, key=str)[:5]
        raise InvalidInputError(f"{where} has {len(unseen)} rows with labels not in {training}: {shown}")


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
    source: str | Path,
    *,
    embeddings: Path | None,
    version: int | None = None,
    only_new: bool = False,
    valued: pa.Array | None = None,
) -> Rows:
    """The validated rows of a source version with their embeddings, sorted by key.

    Args:
        columns: the columns the run reads.
        source: the source table.
        embeddings: the embeddings table, or None when ``columns.embedding_col`` holds them.
        version: the version to read; default the latest.
        only_new: only the rows no run has valued (``ecoval_run_id IS NULL``), filtered in the
            Parquet scan, so an incremental night reads what is new rather than the table.
        valued: the keys already valued, when the values live in a separate values table
            (:func:`valued_keys`); None reads ``ecoval_run_id`` of the source.

    Raises:
        InvalidInputError: the checks of :func:`check_source`, rows without an embedding,
            embeddings with NaN or infinite entries.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    version = int(open_table(source).version()) if version is None else version
    where = _where(source, version)
    checked = check_source(columns, source, version)
    has_runs = valued is None and "ecoval_run_id" in checked.column_names
    names = [columns.key, columns.label, *(["ecoval_run_id"] if has_runs else [])]
    if embeddings is None:
        names.append(columns.embedding_col or "")
    table = open_table(source, version)
    if valued is not None:
        data = table.to_pyarrow_table(columns=names) if embeddings is None else checked.select(names)
        if only_new:
            data = data.filter(pc.invert(_held(data.column(columns.key), valued)))
    elif only_new and has_runs:
        data = table.to_pyarrow_dataset().to_table(columns=names, filter=ds.field("ecoval_run_id").is_null())
        if data.num_rows != checked.column("ecoval_run_id").null_count:
            # Files written before the value columns were added lack the column, and the pushed-down
            # filter drops their rows; filter after a full read instead.
            full = table.to_pyarrow_table(columns=names)
            data = full.filter(pc.is_null(full.column("ecoval_run_id")))
    elif embeddings is None:
        data = table.to_pyarrow_table(columns=names)
    else:
        data = checked
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
    if valued is not None:
        done = _held(data.column(columns.key), valued).to_numpy(zero_copy_only=False)
    elif has_runs:
        done = data.column("ecoval_run_id").is_valid().to_numpy(zero_copy_only=False)
    else:
        done = np.zeros(data.num_rows, bool)
    return Rows(
        version=version,
        keys=data.column(columns.key).to_numpy(zero_copy_only=False)[order],
        X=X[order],
        y=data.column(columns.label).to_numpy(zero_copy_only=False)[order],
        valued=np.asarray(done, dtype=bool)[order],
        table_rows=checked.num_rows,
    )


def _held(keys: pa.ChunkedArray, valued: pa.Array) -> pa.ChunkedArray:
    """Which ``keys`` are in ``valued`` (none when it is empty, whatever its type)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(valued) == 0:
        return pa.chunked_array([pa.array(np.zeros(len(keys), bool))])
    return pc.is_in(keys, value_set=valued)


def require_columns(path: str | Path, version: int, columns: tuple[str, ...]) -> None:
    """Check that ``path@version`` has ``columns``.

    Raises:
        MissingColumnError: naming the columns it lacks and the table version.
    """
    names = set(open_table(path, version).schema().to_arrow().names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise MissingColumnError(f"{_where(path, version)} has no column(s) {missing}")


def rows_of(path: str | Path, version: int | None, key: str, columns: tuple[str, ...] | None, keys: Any) -> pa.Table:
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


def valued_keys(values_table: str | Path, version: int | None, key: str) -> pa.Array:
    """The keys a separate values table holds values for at ``version`` (none before it exists)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if version is None:
        return pa.array([])
    data = open_table(values_table, version).to_pyarrow_table(columns=[key, "ecoval_run_id"])
    return data.filter(pc.is_valid(data.column("ecoval_run_id"))).column(key).combine_chunks()


def unvalued_keys(
    path: str | Path, version: int, key: str, *, valued: pa.Array | None = None, data: pa.Table | None = None
) -> NDArray[np.generic]:
    """Keys of the rows of ``path@version`` that no run had valued.

    Args:
        path: the source table.
        version: its version.
        key: the key column.
        valued: the keys a separate values table holds (:func:`valued_keys`); None reads the
            source's ``ecoval_run_id``.
        data: the key (and ``ecoval_run_id``, where the table has it) of that version, when
            the caller has read them already (:func:`check_source`).
    """
    import pyarrow.compute as pc

    if data is None:
        table = open_table(path, version)
        names = set(table.schema().to_arrow().names)
        wanted = [key] if valued is not None or "ecoval_run_id" not in names else [key, "ecoval_run_id"]
        data = table.to_pyarrow_table(columns=wanted)
    if valued is not None:
        new = data.filter(pc.invert(_held(data.column(key), valued)))
    elif "ecoval_run_id" in data.column_names:
        new = data.filter(pc.is_null(data.column("ecoval_run_id")))
    else:
        new = data
    return np.asarray(new.column(key).to_numpy(zero_copy_only=False))
