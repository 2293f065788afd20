"""Delta tables: value columns, MERGE of values, watermarks (architecture.md, steps 1 and 6)."""

from __future__ import annotations

from ecoval_ops.identifiers import check_identifier, quote_identifier
from ecoval_ops.lakehouse.columns import VALUE_COLUMNS, value_schema
from ecoval_ops.lakehouse.delta_rs import ensure_value_columns, merge_values
from ecoval_ops.lakehouse.tables import open_table
from ecoval_ops.lakehouse.value_writes import Watermark, read_watermark

__all__ = [
    "VALUE_COLUMNS",
    "Watermark",
    "check_identifier",
    "ensure_value_columns",
    "merge_values",
    "open_table",
    "quote_identifier",
    "read_watermark",
    "value_schema",
]
