"""The Delta tables a run touched, as datasets of its parent MLflow run (architecture.md, step 7).

The run page lists the source table at the version valued (context ``valuation``), the
validation table at its pinned version (``validation``) and, where the values go to a table of
their own, the values table at the version the MERGE committed (``values``), each with its
schema and row count.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ecoval_ops.lakehouse.tables import open_table
from ecoval_ops.tracking import TableInput

__all__ = ["table_input"]


def table_input(uri: str | Path, version: int, context: str, digest: str | None = None) -> TableInput:
    """``uri@version`` as a run's dataset: its schema and row count (from the files' footers).

    Args:
        uri: the table.
        version: the version read or written.
        context: its role in the run (:class:`~ecoval_ops.tracking.TableInput`).
        digest: a digest of what the run read; default one of the table version itself.
    """
    import pyarrow as pa

    table = open_table(uri, version)
    schema = pa.schema(table.schema().to_arrow())
    return TableInput(
        uri=str(uri),
        version=version,
        context=context,
        digest=digest or hashlib.sha256(f"{uri}@v{version}".encode()).hexdigest()[:16],
        columns=tuple((f.name, str(f.type), f.nullable) for f in schema),
        rows=int(table.to_pyarrow_dataset().count_rows()),
    )
