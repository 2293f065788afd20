"""Every table a run touched is a dataset of its MLflow run, with its version, schema and rows."""

from __future__ import annotations

import json

import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient

from ecoval_ops.pipeline import run_valuation
from tests.conftest import blob_rows, run_config, uuid_keyed

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


def test_the_run_page_lists_the_source_validation_and_values_tables(tmp_path) -> None:
    lake = tmp_path / "lake"
    write_deltalake(str(lake / "train"), uuid_keyed(blob_rows(0, 300)))
    write_deltalake(str(lake / "valid"), uuid_keyed(blob_rows(300, 360)))
    cfg = run_config(
        lake / "train",
        tmp_path,
        engine="delta-rs",
        clusters=3,
        validation_table=str(lake / "valid"),
        values_table=str(lake / "values"),
    )
    summary = run_valuation(cfg)
    run = MlflowClient(tracking_uri=cfg.tracking_uri).get_run(summary.run_id)
    found = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in run.inputs.dataset_inputs
    }
    values_version = DeltaTable(str(lake / "values")).version()
    expected = {
        "valuation": ("train@v0", 300, "row_id", "string"),
        "validation": ("valid@v0", 60, "row_id", "string"),
        "values": (f"values@v{values_version}", 300, "ecoval_value", "double"),
    }
    assert set(found) == set(expected)
    for context, (name, rows, column, kind) in expected.items():
        dataset = found[context]
        assert dataset.name == name and dataset.source_type == "delta_table"
        assert json.loads(dataset.profile) == {"num_rows": rows}
        columns = {c["name"]: c["type"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert columns[column] == kind, columns
    assert str(lake / "values") in found["values"].source
