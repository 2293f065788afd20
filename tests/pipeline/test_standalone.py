"""The Spark engine against a real standalone cluster, beyond the reference set (spec section 5b)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient

from ecoval_ops.config import load_config
from ecoval_ops.pipeline import DeltaRsEngine, SparkEngine, run_valuation
from ecoval_ops.valuation.reference import holdout_mask
from tests.conftest import blobs
from tests.stack.services import spark_standalone

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.delta, pytest.mark.mlflow, pytest.mark.slow]

ROWS, REFERENCE = 20_000, 5000
COMPARED = ["ecoval_value", "ecoval_intrinsic", "ecoval_extrinsic", "ecoval_percentile", "ecoval_label_confidence"]


def _table(path: Path) -> None:
    """20k rows: a 16-d embedding column and string labels, 10% of them flipped."""
    X, y = blobs(ROWS, n_classes=4, d=16, noise=0.1, seed=11)
    names = np.array(["cat", "dog", "fox", "owl"])
    write_deltalake(
        str(path),
        pa.table({"id": np.arange(ROWS), "emb": pa.array(list(X), pa.list_(pa.float64())), "y": names[y]}),
    )


def _values(path: Path) -> pa.Table:
    columns = ["id", "ecoval_cluster", "ecoval_mode", "ecoval_suspect", "ecoval_suggested_label", *COMPARED]
    return DeltaTable(str(path)).to_pyarrow_table(columns=columns).sort_by("id")


def test_standalone_cluster_local_and_delta_rs_value_alike(spark, tmp_path: Path) -> None:
    flags = {"key": "id", "label": "y", "embedding_col": "emb", "max_reference_rows": REFERENCE}
    tables = {name: tmp_path / name for name in ("standalone", "local", "delta_rs")}
    for path in tables.values():
        _table(path)
    with spark_standalone(tmp_path / "spark") as cluster:
        env = {**cluster.env, "ECOVAL_SPARK_MASTER": cluster.spark_master}
        argv = [
            str(Path(sys.executable).parent / "ecoval"), "run", "--table", str(tables["standalone"]), "--key", "id",
            "--label", "y", "--embedding-col", "emb", "--engine", "spark", "--max-reference-rows", str(REFERENCE),
            "--mlflow-uri", f"sqlite:///{tmp_path / 'standalone.db'}", "--json", "--quiet",
        ]  # fmt: skip
        job = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert job.returncode == 0, job.stderr[-3000:]
        summary = json.loads(job.stdout.strip().splitlines()[-1])
        assert summary["mode"] == "refit" and summary["rows_valued"] == ROWS
        uri = f"sqlite:///{tmp_path / 'standalone.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        (parent,) = client.search_runs(
            [client.get_experiment_by_name("ecoval").experiment_id], "tags.`ecoval.mode` = 'refit'"
        )
        training = ROWS - int(holdout_mask(range(ROWS), 0.1).sum())
        assert parent.data.metrics["training_rows"] == training
        assert REFERENCE - 50 <= parent.data.metrics["reference_rows"] <= REFERENCE
        assert parent.data.params["max_reference_rows"] == str(REFERENCE)
        # The run's application ran on the cluster's worker, not in a local master.
        with urllib.request.urlopen(f"{cluster.spark_ui}/json/", timeout=10) as r:
            assert len(json.load(r)["completedapps"]) >= 1
    local = load_config(
        None, table=str(tables["local"]), engine="spark", mlflow_uri=f"sqlite:///{tmp_path / 'local.db'}", **flags
    )
    run_valuation(local, SparkEngine(spark))
    in_process = load_config(
        None, table=str(tables["delta_rs"]), engine="delta-rs", mlflow_uri=f"sqlite:///{tmp_path / 'rs.db'}", **flags
    )
    run_valuation(in_process, DeltaRsEngine())

    standalone = _values(tables["standalone"])
    for other in (_values(tables["local"]), _values(tables["delta_rs"])):
        for column in ("id", "ecoval_cluster", "ecoval_mode", "ecoval_suspect", "ecoval_suggested_label"):
            assert standalone.column(column).equals(other.column(column)), column
        for column in COMPARED:
            left = standalone.column(column).to_numpy(zero_copy_only=False).astype(float)
            right = other.column(column).to_numpy(zero_copy_only=False).astype(float)
            np.testing.assert_allclose(left, right, rtol=1e-9, atol=1e-12, err_msg=column)
    # Every row valued once: the reference rows in sample, every other row out of sample.
    modes = standalone.column("ecoval_mode").to_numpy(zero_copy_only=False)
    held = holdout_mask(standalone.column("id").to_pylist(), 0.1)
    assert standalone.column("ecoval_value").null_count == 0
    assert REFERENCE - 50 <= int((modes == "in_sample").sum()) <= REFERENCE
    assert not (modes[held] == "in_sample").any()
