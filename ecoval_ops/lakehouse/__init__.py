"""Delta tables: value columns, MERGE of values, watermarks (architecture.md, steps 1 and 6)."""

from __future__ import annotations

from ecoval_ops.lakehouse.columns import VALUE_COLUMNS, value_schema
from ecoval_ops.lakehouse.delta_rs import Watermark, ensure_value_columns, merge_values, open_table, read_watermark
from ecoval_ops.lakehouse.identifiers import check_identifier, quote_identifier

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
