"""Night over night: the new rows' figures, alerts on the run, the CLI and `ecoval report`, the trend."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from deltalake import write_deltalake
from mlflow import MlflowClient

from ecoval_ops.pipeline import run_valuation
from ecoval_ops.reporting.night import Night, alert_reason, alert_rules
from tests.conftest import blob_rows, flipped_rows, run_config


def _reason(night: Night, *, suspect_share: float | None, drift: float) -> str | None:
    return alert_reason(alert_rules(night, suspect_share=suspect_share, drift=drift))


def test_alert_thresholds() -> None:
    calm = Night(rows=50, suspect_share=0.12, mean_percentile=0.5, cluster_drift=0.1, model_suspect_share=0.1)
    assert _reason(calm, suspect_share=None, drift=0.2) is None
    # Default: twice the model's share and at least 5 points more (here 0.2).
    noisy = Night(rows=50, suspect_share=0.21, mean_percentile=0.3, cluster_drift=0.1, model_suspect_share=0.1)
    assert "21.0% of the 50 new rows are suspect (threshold 20.0%" in _reason(noisy, suspect_share=None, drift=0.2)
    suspect_rule, drift_rule = alert_rules(noisy, suspect_share=None, drift=0.2)
    assert (suspect_rule.metric, suspect_rule.passed, suspect_rule.threshold) == ("night_suspect_share", False, 0.2)
    assert (drift_rule.column, drift_rule.passed, drift_rule.value, drift_rule.reason) == (
        "ecoval_cluster",
        True,
        0.1,
        "",
    )
    low = Night(rows=50, suspect_share=0.05, mean_percentile=0.5, cluster_drift=0.1, model_suspect_share=0.01)
    assert _reason(low, suspect_share=None, drift=0.2) is None  # 5% < 1% + 5 points
    assert _reason(low, suspect_share=0.04, drift=0.2) is not None
    drifted = Night(rows=50, suspect_share=0.0, mean_percentile=0.5, cluster_drift=0.5, model_suspect_share=0.1)
    assert "drift 0.50 from the model's (threshold 0.20)" in _reason(drifted, suspect_share=None, drift=0.2)
    # A handful of rows is no evidence: one odd row is a 100% share.
    few = Night(rows=19, suspect_share=1.0, mean_percentile=0.0, cluster_drift=0.9, model_suspect_share=0.1)
    assert _reason(few, suspect_share=0.0, drift=0.0) is None
    assert all(r.passed for r in alert_rules(few, suspect_share=0.0, drift=0.0))


@pytest.mark.integration
@pytest.mark.delta
@pytest.mark.mlflow
def test_a_night_of_flipped_rows_is_an_alert_everywhere_a_user_looks(tmp_path) -> None:
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=3)
    first = run_valuation(cfg)
    assert first.alert is None and first.metrics["night_rows"] == 300
    write_deltalake(str(path), blob_rows(300, 340), mode="append", schema_mode="merge")
    calm = run_valuation(cfg)
    assert calm.mode == "incremental" and calm.alert is None and calm.metrics["night_rows"] == 40
    write_deltalake(str(path), flipped_rows(340, 380), mode="append", schema_mode="merge")
    out = subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "run", "--table", str(path), "--key", "row_id", "--label", "label",
         "--features", "f0,f1,f2", "--engine", "delta-rs", "--mlflow-uri", cfg.tracking_uri, "--json"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "incremental" and "of the 40 new rows are suspect" in summary["alert"]
    assert summary["metrics"]["night_suspect_share"] > 0.8
    assert f"ecoval: warning: alert on {path}: " in out.stderr

    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.data.tags["ecoval.alert"] == summary["alert"] and run.data.metrics["night_rows"] == 40
    assert run.data.tags["mlflow.note.content"].endswith(f"**Alert**: {summary['alert']}")
    assert "ecoval.alert" not in client.get_run(calm.run_id).data.tags
    assert "review/trend.png" in [a.path for a in client.list_artifacts(summary["run_id"], "review")]

    report = subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "report", "--table", str(path), "--mlflow-uri", cfg.tracking_uri],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    trend = report.stdout[report.stdout.index("last 3 runs") :].splitlines()
    assert [line.split()[2] for line in trend[1:]] == ["refit", "incremental", "incremental"]
    assert "ALERT" in trend[3] and "ALERT" not in trend[2] and np.isclose(float(trend[1].split()[3]), 300)
