from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ecoval_ops.valuation import EcoVal, ValuationResult


def test_result_to_arrow_has_the_row_value_columns(small_data) -> None:
    ev = EcoVal(n_clusters=3).fit(*small_data)
    table = ev.result_.to_arrow(np.arange(300), "row_id")
    assert table.column_names == [
        "row_id",
        "ecoval_value",
        "ecoval_intrinsic",
        "ecoval_extrinsic",
        "ecoval_cluster",
        "ecoval_cluster_value",
        "ecoval_suspect",
        "ecoval_mode",
    ]
    assert table.schema.field("ecoval_cluster").type == pa.int32()
    assert table.column("ecoval_suspect").to_numpy().sum() == int((ev.intrinsic_ < 0).sum())
    assert set(table.column("ecoval_mode").to_pylist()) == {"in_sample"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("values", np.array([1.0, np.nan]), "values has 1 non-finite"), ("intrinsic", np.zeros(3), r"shape \(3,\)")],
)
def test_result_rejects_bad_arrays(field: str, value: np.ndarray, message: str) -> None:
    fields = {
        "values": np.zeros(2),
        "intrinsic": np.zeros(2),
        "extrinsic": np.ones(2),
        "clusters": np.zeros(2, dtype=int),
        "cluster_values": np.zeros(2),
        "mode": "in_sample",
    }
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        ValuationResult(**fields)
