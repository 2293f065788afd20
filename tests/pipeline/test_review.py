"""What a reviewer finds in MLflow after a run: review artifacts, warning tag, model description."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient

from ecoval_ops.exceptions import MissingColumnError
from ecoval_ops.pipeline import run_valuation
from ecoval_ops.tracking import CURRENT_ALIAS
from tests.conftest import blob_rows, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def refit(tmp_path_factory):
    """One refit for the module; the tests after the first run on from the state the one before left."""
    home = tmp_path_factory.mktemp("review")
    path = home / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 400))
    cfg = run_config(path, home, engine="delta-rs", n_clusters=4)
    return cfg, run_valuation(cfg)


def _files(client: MlflowClient, run_id: str, path: str) -> dict[str, int]:
    return {f.path.split("/")[-1]: f.file_size for f in client.list_artifacts(run_id, path)}


def test_parent_run_carries_the_review_artifacts(refit, tmp_path) -> None:
    cfg, summary = refit
    client = MlflowClient(cfg.tracking_uri)
    files = _files(client, summary.run_id, "review")
    pngs = {
        "value_histogram.png",
        "cluster_map.png",
        "removal_curve.png",
        "cluster_values.png",
        "quarantine_preview.png",
    }
    assert pngs <= set(files) and all(files[name] > 5000 for name in pngs)
    expected = {"clusters.csv", "clusters.html", "top_bottom_rows.csv", "diagnostics.json", "diagnostics.html"}
    expected |= {"quarantine_preview.csv", "quarantine_preview.html"}
    assert expected <= set(files)

    local = client.download_artifacts(summary.run_id, "review", str(tmp_path / "dl"))
    with open(f"{local}/clusters.csv") as f:
        clusters = list(csv.DictReader(f))
    assert len(clusters) == 4 and sum(int(c["rows"]) for c in clusters) == 400
    with open(f"{local}/top_bottom_rows.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {"row_id", "ecoval_value", "end"} <= set(rows[0])
    assert not {"f0", "f1", "f2", "label"} & set(rows[0]), "raw features must not leave the table"
    values = [float(r["ecoval_value"]) for r in rows]
    assert values[:20] == sorted(values[:20], reverse=True) and max(values[20:]) <= min(values[:20])
    diagnostics = json.loads(Path(local, "diagnostics.json").read_text())
    assert {"Gamma_alpha", "Gamma_beta*", "gamma", "shrinkage_lambda_mean", "gammas_clipped"} <= set(diagnostics)
    curve = json.loads(Path(local, "removal_curve.json").read_text())
    # The curve's 5% steps and the preview's 1% and 2% cuts; one more training without the suspects.
    assert curve["shares"] == [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert len(curve["top"]) == len(curve["bottom"]) == 12 and 0.0 <= curve["full"] <= 1.0
    assert 0.0 <= curve["without_suspects"] <= 1.0
    with open(f"{local}/quarantine_preview.csv") as f:
        preview = {c["cut"]: c for c in csv.DictReader(f)}
    assert float(preview["20%"]["validation_accuracy"]) == pytest.approx(curve["bottom"][5])
    assert int(preview["suspect"]["rows_removed"]) == round(summary.suspect_share * summary.rows_valued)

    run = client.get_run(summary.run_id)
    assert run.data.tags["ecoval.gammas_clipped"] == str(diagnostics["gammas_clipped"]).lower()
    assert ("ecoval.warning" in run.data.tags) == diagnostics["gammas_clipped"]
    assert run.data.metrics["removal_accuracy_top20"] == pytest.approx(curve["top"][5])


def test_registered_version_is_described_and_aliased(refit) -> None:
    cfg, summary = refit
    client = MlflowClient(cfg.tracking_uri)
    name = cfg.registered_model_name
    version = client.get_model_version(name, summary.model_version)
    assert str(cfg.source.table) in version.description and summary.run_id in version.description
    assert "Gamma_alpha" in version.description and f"seed: {cfg.method.seed}" in version.description
    assert client.get_registered_model(name).description.startswith("EcoVal valuation model")
    assert str(client.get_model_version_by_alias(name, CURRENT_ALIAS).version) == summary.model_version

    again = run_valuation(cfg.with_settings(refit="always"))
    assert int(again.model_version) == int(summary.model_version) + 1
    assert str(client.get_model_version_by_alias(name, CURRENT_ALIAS).version) == again.model_version


def test_incremental_run_logs_review_without_a_removal_curve(refit) -> None:
    cfg, _ = refit
    write_deltalake(str(cfg.source.table), blob_rows(400, 450), mode="append", schema_mode="merge")
    nightly = run_valuation(cfg)
    assert nightly.mode == "incremental"
    files = _files(MlflowClient(cfg.tracking_uri), nightly.run_id, "review")
    assert {"value_histogram.png", "cluster_map.png", "cluster_values.png", "clusters.csv"} <= set(files)
    assert "removal_curve.png" not in files


def test_review_columns_show_beside_the_top_and_bottom_rows(refit, tmp_path) -> None:
    cfg, _ = refit
    asked = cfg.with_settings(review_columns=("f0", "label"), refit="always")
    summary = run_valuation(asked)
    client = MlflowClient(cfg.tracking_uri)
    local = client.download_artifacts(summary.run_id, "review/top_bottom_rows.csv", str(tmp_path / "dl"))
    with open(local) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {"f0", "label"} <= set(rows[0]) and "f1" not in rows[0]
    source = DeltaTable(str(cfg.source.table)).to_pandas().set_index("row_id")
    for row in rows[:3]:
        assert float(row["f0"]) == pytest.approx(source.loc[int(row["row_id"]), "f0"])
    with pytest.raises(MissingColumnError, match=r"has no column\(s\) \['nope'\]"):
        run_valuation(cfg.with_settings(review_columns=("nope",)))
