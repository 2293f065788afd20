"""The value columns written to the source table (architecture.md, "Value columns")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.valuation import ValuationResult

__all__ = [
    "EMBEDDING_COL",
    "LABEL_TYPE",
    "NEW_COL",
    "SUGGESTION_COLUMNS",
    "VALUE_COLUMNS",
    "value_columns",
    "value_schema",
]

EMBEDDING_COL = "ecoval_embedding"
"""The embedding column of an embeddings table."""

NEW_COL = "ecoval_new"
"""In a run's workspace only: whether no run had valued the row before this one (the night's
figures); never written to a table."""

LABEL_TYPE = "label"
"""Stands for the label column's own type in :data:`VALUE_COLUMNS`."""

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
    "ecoval_suggested_label": LABEL_TYPE,
    "ecoval_label_confidence": "double",
}
"""Column name -> Delta primitive type, in the order they are added to a table.

``ecoval_suggested_label`` takes the type of the table's label column (:data:`LABEL_TYPE`)."""

SUGGESTION_COLUMNS = ("ecoval_suggested_label", "ecoval_label_confidence")
"""The columns that came later: tables valued before them lack them until their next run."""

_TIE = 1e-9
"""Values closer than this share of the reference's largest magnitude rank as equal."""

_ARROW = {
    "double": "float64",
    "integer": "int32",
    "boolean": "bool_",
    "string": "string",
}


def value_schema(label_type: pa.DataType | None = None) -> pa.Schema:
    """The Arrow schema of :data:`VALUE_COLUMNS` (timestamps in microseconds, UTC).

    Args:
        label_type: the labels' Arrow type, for ``ecoval_suggested_label``; None leaves that
            column out.
    """
    import pyarrow as pa

    fields = []
    for name, delta_type in VALUE_COLUMNS.items():
        if delta_type == LABEL_TYPE:
            if label_type is not None:
                fields.append(pa.field(name, label_type, nullable=True))
            continue
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
    in_sample: NDArray[np.bool_] | None = None,
) -> pa.Table:
    """The key and the value columns of valued rows, typed as :func:`value_schema`.

    ``ecoval_percentile`` is the rank of each value among ``reference`` (the model's in-sample
    values), so rows valued on different nights stay comparable without rewriting the rows
    valued before. ``in_sample`` marks the rows whose ``ecoval_mode`` is ``in_sample`` (the
    state's members) when the result's mode is not every row's.
    """
    import pyarrow as pa

    table = result.to_arrow(keys, key)
    n = table.num_rows
    if in_sample is not None:
        modes = pa.array(np.where(in_sample, "in_sample", "out_of_sample"), pa.string())
        table = table.set_column(table.column_names.index("ecoval_mode"), "ecoval_mode", modes)
    # A member's own reference value and its value from the row pass differ by rounding alone
    # (1e-16), which would move it across its own rank; values within 1e-9 of the scale tie.
    tie = _TIE * float(np.max(np.abs(reference), initial=0.0))
    percentile = np.searchsorted(np.sort(reference), result.values + tie, side="right") / reference.size
    when = valued_at or datetime.now(UTC)
    table = (
        table.append_column("ecoval_percentile", pa.array(percentile, pa.float64()))
        .append_column("ecoval_run_id", pa.array([run_id] * n, pa.string()))
        .append_column("ecoval_model_version", pa.array([model_version] * n, pa.string()))
        .append_column("ecoval_valued_at", pa.array([when] * n, pa.timestamp("us", tz="UTC")))
    )
    label = "ecoval_suggested_label"
    schema = value_schema(table.schema.field(label).type if label in table.column_names else None)
    present = [f for f in schema if f.name in table.column_names]
    return table.select([key, *(f.name for f in present)]).cast(pa.schema([table.schema.field(key), *present]))
