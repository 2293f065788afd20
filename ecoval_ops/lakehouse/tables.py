"""Opening and writing Delta tables: the one entry point every delta-rs reader and writer of ecoval_ops uses.

A table is a :class:`~ecoval_ops.storage.TableRef` (a URI and storage options); a plain path or
URI is taken as a ref without options. An object store's refusal (wrong credentials, a missing
bucket, an endpoint that does not answer) becomes one line without secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ecoval_ops.exceptions import TableNotFoundError
from ecoval_ops.storage import TableRef, storage_error

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["TableLike", "open_table", "spark_path", "store_errors", "table_exists", "write_table"]

TableLike: TypeAlias = TableRef | str | Path
"""A table as callers name it: a ref, or a path or URI (no storage options beyond the environment's)."""


@contextmanager
def store_errors(table: TableLike) -> Iterator[TableRef]:
    """Yield ``table`` as a ref; an object store's ``OSError`` inside becomes one line (InvalidInputError)."""
    ref = TableRef.of(table)
    try:
        yield ref
    except OSError as e:
        if ref.is_local:
            raise
        raise storage_error(e, ref) from None


def spark_path(table: TableLike) -> str:
    """The path Spark reads ``table`` at (``s3://`` through Hadoop's ``s3a`` connector)."""
    return TableRef.of(table).spark_uri


def table_exists(table: TableLike) -> bool:
    """Whether ``table`` holds a Delta log."""
    from deltalake import DeltaTable

    with store_errors(table) as ref:
        return bool(DeltaTable.is_deltatable(ref.delta_uri, storage_options=dict(ref.storage_options) or None))


def open_table(table: TableLike, version: int | None = None) -> DeltaTable:
    """Open the Delta table ``table`` (at ``version`` when given).

    Raises:
        TableNotFoundError: the location holds no Delta table, or the version does not exist.
        InvalidInputError: the object store refused or did not answer (one line, no secret).
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError
    from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

    ref = TableRef.of(table)
    if not table_exists(ref):
        raise TableNotFoundError(f"{ref} is not a Delta table (no _delta_log found)")
    with store_errors(ref):
        try:
            return DeltaTable(ref.delta_uri, version=version, storage_options=dict(ref.storage_options) or None)
        except (DeltaTableNotFound, DeltaError) as e:
            raise TableNotFoundError(f"cannot open Delta table {ref} at version {version}: {e}") from e


def write_table(table: TableLike, data: Any, **options: Any) -> None:
    """``deltalake.write_deltalake`` to ``table`` with its storage options (``options`` as that takes them)."""
    from deltalake import write_deltalake

    with store_errors(table) as ref:
        write_deltalake(ref.delta_uri, data, storage_options=dict(ref.storage_options) or None, **options)
