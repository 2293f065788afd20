"""The checks of a source version a run makes before it writes anything (architecture.md, step 1).

Schema (columns and the key's type), keys and labels streamed through
:class:`~ecoval_ops.lakehouse.checks.SourcePass` (the pass the Spark engine runs on its
executors), the classes and seen labels, and the embeddings' shape and values. Each failure is
one :class:`~ecoval_ops.exceptions.InvalidInputError` that names the column and the table version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError, MissingColumnError
from ecoval_ops.keys import check_key_type
from ecoval_ops.lakehouse.batches import BATCH_ROWS, run_local
from ecoval_ops.lakehouse.checks import SourceCheck, SourcePass, check_counts, check_duplicates, local_duplicates
from ecoval_ops.lakehouse.tables import TableLike, open_table

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.lakehouse.source import SourceColumns

__all__ = [
    "check_finite",
    "check_schema",
    "check_seen_labels",
    "check_source",
    "embedding_matrix",
    "label_classes",
    "non_finite_error",
    "require_columns",
    "where_of",
]


def where_of(path: TableLike, version: int) -> str:
    """A table version as messages name it: ``path@vN``."""
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

    where = where_of(path, version)
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
    where = where_of(path, version)
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


def check_finite(columns: SourceColumns, X: NDArray[np.float64], where: str) -> None:
    """Raise :func:`non_finite_error` when ``X`` has a null, NaN or infinite entry."""
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


def require_columns(path: TableLike, version: int, columns: tuple[str, ...]) -> None:
    """Check that ``path@version`` has ``columns``.

    Raises:
        MissingColumnError: naming the columns it lacks and the table version.
    """
    names = set(open_table(path, version).schema().to_arrow().names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise MissingColumnError(f"{where_of(path, version)} has no column(s) {missing}")
