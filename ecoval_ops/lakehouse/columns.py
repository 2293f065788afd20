"""The value columns written to the source table (architecture.md, "Value columns")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.valuation import ValuationResult

__all__ = ["EMBEDDING_COL", "VALUE_COLUMNS", "value_columns", "value_schema"]

EMBEDDING_COL = "ecoval_embedding"
"""The embedding column of an embeddings table."""

VALUE_COLUMNS: dict[str, str] = {
    "ecoval_value": "double",
    "ecoval_percentile": "double",
    "ecoval_intrinsic": "double",
    "ecoval_extrinsic": "double",
    "ecoval_cluster": "integer",
    "ecoval_cluster_value": "double",
    "ecoval_suspect": "boolean",
    "ecoval_mode": "string",
    "ecoval_run_id": "string",
    "ecoval_model_version": "string",
    "ecoval_valued_at": "timestamp",
}
"""Column name -> Delta primitive type, in the order they are added to a table."""

_ARROW = {
    "double": "float64",
    "integer": "int32",
    "boolean": "bool_",
    "string": "string",
}


def value_schema() -> pa.Schema:
    """The Arrow schema of :data:`VALUE_COLUMNS` (timestamps in microseconds, UTC)."""
    import pyarrow as pa

    fields = []
    for name, delta_type in VALUE_COLUMNS.items():
        arrow_type = pa.timestamp("us", tz="UTC") if delta_type == "timestamp" else getattr(pa, _ARROW[delta_type])()
        fields.append(pa.field(name, arrow_type, nullable=True))
    return pa.schema(fields)


def value_columns(
    keys: ArrayLike,
    result: ValuationResult,
    *,
    key: str,
    reference: NDArray[np.float64],
    run_id: str,
    model_version: str,
    valued_at: datetime | None = None,
) -> pa.Table:
    """The key and every value column of valued rows, typed as :func:`value_schema`.

    ``ecoval_percentile`` is the rank of each value among ``reference`` (the model's in-sample
    values), so rows valued on different nights stay comparable without rewriting the rows
    valued before.
    """
    import pyarrow as pa

    table = result.to_arrow(keys, key)
    n = table.num_rows
    percentile = np.searchsorted(np.sort(reference), result.values, side="right") / reference.size
    when = valued_at or datetime.now(UTC)
    table = (
        table.append_column("ecoval_percentile", pa.array(percentile, pa.float64()))
        .append_column("ecoval_run_id", pa.array([run_id] * n, pa.string()))
        .append_column("ecoval_model_version", pa.array([model_version] * n, pa.string()))
        .append_column("ecoval_valued_at", pa.array([when] * n, pa.timestamp("us", tz="UTC")))
    )
    schema = value_schema()
    return table.select([key, *schema.names]).cast(pa.schema([table.schema.field(key), *schema]))
