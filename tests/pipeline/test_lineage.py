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
        n_clusters=3,
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


def test_openlineage_datasets_name_the_tables_and_carry_the_checks(tmp_path) -> None:
    from openlineage.client.serde import Serde

    from ecoval_ops.pipeline.lineage import dataset_address, openlineage_datasets
    from ecoval_ops.pipeline.pinned import PinnedRun

    assert dataset_address("s3://lake/tables/train") == ("s3://lake", "tables/train")
    assert dataset_address(tmp_path / "t") == ("file", str((tmp_path / "t").resolve()))
    write_deltalake(str(tmp_path / "train"), uuid_keyed(blob_rows(0, 50)))
    cfg = run_config(tmp_path / "train", tmp_path, engine="delta-rs", values_table=str(tmp_path / "values"))
    run = PinnedRun(cfg, 7)
    (source,), (target,) = openlineage_datasets(run)
    assert (source.name, source.facets["version"].datasetVersion, source.inputFacets) == (
        str((tmp_path / "train").resolve()),
        "7",
        {},
    )
    assert target.name == str((tmp_path / "values").resolve()) and target.facets == {} and target.outputFacets == {}
    figures = {
        "rows_valued": 50,
        "night": {"night_rows": 40.0, "night_suspect_share": 0.25, "night_mean_percentile": 0.4},
        "alert_rules": [
            {"metric": "night_suspect_share", "column": "ecoval_suspect", "threshold": 0.2, "passed": False},
            {"metric": "night_cluster_drift", "column": "ecoval_cluster", "threshold": 0.2, "passed": True},
        ],
    }
    (source,), (target,) = openlineage_datasets(run, figures, written=3)
    event = json.loads(Serde.to_json(source))["inputFacets"]
    assert event["dataQualityMetrics"]["rowCount"] == 50
    assert event["dataQualityMetrics"]["columnMetrics"]["ecoval_suspect"] == {
        "count": 40.0,
        "sum": 10.0,
        "quantiles": {},
    }
    assert [(a["assertion"], a["success"]) for a in event["dataQualityAssertions"]["assertions"]] == [
        ("night_suspect_share <= 0.2", False),
        ("night_cluster_drift <= 0.2", True),
    ]
    assert target.facets["version"].datasetVersion == "3" and target.outputFacets["outputStatistics"].rowCount == 50
