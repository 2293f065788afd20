"""The value columns written to the source table (architecture.md, "Value columns")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["VALUE_COLUMNS", "value_schema"]

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
