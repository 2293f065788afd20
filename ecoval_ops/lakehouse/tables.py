"""Opening Delta tables: the one entry point every reader and writer of ecoval_ops uses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import TableNotFoundError

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["open_table"]


def open_table(path: str | Path, version: int | None = None) -> DeltaTable:
    """Open the Delta table at ``path`` (at ``version`` when given).

    Raises:
        TableNotFoundError: the path holds no Delta table, or the version does not exist.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError
    from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

    uri = str(path)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFoundError(f"{uri} is not a Delta table (no _delta_log found)")
    try:
        return DeltaTable(uri, version=version)
    except (DeltaTableNotFound, DeltaError, OSError) as e:
        raise TableNotFoundError(f"cannot open Delta table {uri} at version {version}: {e}") from e
