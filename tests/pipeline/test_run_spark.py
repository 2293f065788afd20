"""`run_valuation` with the Spark engine, and the engines reading each other's writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse import read_watermark
from ecoval_ops.lakehouse.source import read_rows
from ecoval_ops.pipeline import DeltaRsEngine, SparkEngine, fitting, run_valuation, steps
from tests.conftest import blob_rows, blobs, run_config

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.delta, pytest.mark.mlflow, pytest.mark.slow]


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 400))
    return run_config(path, tmp_path, engine="spark", n_clusters=4)


def test_spark_engine_refit_then_delta_rs_incremental(spark, cfg) -> None:
    first = run_valuation(cfg, SparkEngine(spark))
    assert first.mode == "refit" and first.rows_valued == 400 and first.n_trainings == 12
    assert run_valuation(cfg, SparkEngine(spark)).mode == "noop"
    write_deltalake(str(cfg.source.table), blob_rows(400, 450), mode="append", schema_mode="merge")
    nightly = run_valuation(cfg, DeltaRsEngine())
    assert nightly.mode == "incremental" and nightly.rows_valued == 50
    table = spark.read.format("delta").load(str(cfg.source.table))
    assert table.count() == 450 and table.filter("ecoval_value IS NULL").count() == 0
    assert read_watermark(cfg.source.table).run_id == nightly.run_id
    by_mode = dict(table.groupBy("ecoval_mode").count().collect())
    assert by_mode["out_of_sample"] >= 50


def test_spark_engine_reports_null_features_and_writes_nothing(spark, cfg) -> None:
    broken = blob_rows(400, 410).set_column(1, "f0", pa.array([None] * 10, pa.float64()))
    write_deltalake(str(cfg.source.table), broken, mode="append")
    version = DeltaTable(str(cfg.source.table)).version()
    with pytest.raises(InvalidInputError, match=r"feature column 'f0' of .*@v1 has 10 null, NaN or infinite values"):
        run_valuation(cfg, SparkEngine(spark))
    assert DeltaTable(str(cfg.source.table)).version() == version


def test_engines_give_the_same_values_on_the_same_table(spark, cfg, tmp_path) -> None:
    twin = tmp_path / "twin"
    write_deltalake(str(twin), blob_rows(0, 400))
    twin_cfg = run_config(twin, tmp_path, engine="spark", n_clusters=4, model_name="ecoval_twin")
    run_valuation(cfg, SparkEngine(spark))
    run_valuation(twin_cfg, DeltaRsEngine())
    columns = ["row_id", "ecoval_value", "ecoval_intrinsic", "ecoval_extrinsic", "ecoval_cluster", "ecoval_mode"]
    a = DeltaTable(str(cfg.source.table)).to_pyarrow_table(columns=columns).sort_by("row_id")
    b = DeltaTable(str(twin)).to_pyarrow_table(columns=columns).sort_by("row_id")
    for column in columns:
        left, right = a.column(column).to_numpy(zero_copy_only=False), b.column(column).to_numpy(zero_copy_only=False)
        if column == "ecoval_mode":
            np.testing.assert_array_equal(left, right)
        else:
            np.testing.assert_allclose(left, right, rtol=1e-12)


def test_mllib_clusters_large_tables(spark, cfg) -> None:
    summary = run_valuation(cfg, SparkEngine(spark, mllib_min_rows=100))
    assert summary.mode == "refit" and summary.rows_valued == 400
    table = DeltaTable(str(cfg.source.table)).to_pyarrow_table()
    assert table.column("ecoval_value").null_count == 0
    assert set(table.column("ecoval_cluster").to_pylist()) <= set(range(4))


def test_spark_engine_reads_an_embedding_column(spark, tmp_path) -> None:
    X, y = blobs(200, n_classes=2, d=4, noise=0.1, seed=6)
    path = tmp_path / "emb"
    write_deltalake(str(path), pa.table({"id": np.arange(200), "emb": [list(r) for r in X], "y": y}))
    cfg = run_config(path, tmp_path, engine="spark", embedding=True, n_clusters=3)
    rows = read_rows(steps.detect(cfg, SparkEngine(spark)).run.columns, cfg.source.table, embeddings=None)
    np.testing.assert_allclose(rows.X, X)
    assert run_valuation(cfg, SparkEngine(spark)).rows_valued == 200


def test_spark_embeds_images_with_torchvision_in_batches(spark, tmp_path) -> None:
    import torch
    import torchvision

    from ecoval_ops.config import load_config
    from tests.pipeline.test_steps import _digits_table

    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), weights)
    path = tmp_path / "digits"
    write_deltalake(str(path), _digits_table(120, png=True))
    common = {
        "table": str(path),
        "key": "id",
        "label": "label",
        "image_col": "image",
        "embedder": "torchvision:mobilenet_v3_small",
        "weights": str(weights),
        "n_clusters": 3,
        "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    run = steps.detect(load_config(None, engine="spark", **common), SparkEngine(spark)).run
    assert steps.embed(run, SparkEngine(spark)) == 120
    spark_rows = DeltaTable(str(run.embeddings_table())).to_pyarrow_table().sort_by("id")
    # The same embedder in-process (delta-rs engine) gives the same vectors.
    twin_cfg = load_config(None, engine="delta-rs", staging_dir=str(tmp_path / "twin"), **common)
    twin = steps.detect(twin_cfg, DeltaRsEngine()).run
    steps.embed(twin, DeltaRsEngine())
    local_rows = DeltaTable(str(twin.embeddings_table())).to_pyarrow_table().sort_by("id")
    np.testing.assert_allclose(
        np.stack(spark_rows.column("ecoval_embedding").to_numpy(zero_copy_only=False)),
        np.stack(local_rows.column("ecoval_embedding").to_numpy(zero_copy_only=False)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_spark_jobs_run_the_steps(spark, cfg, tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from ecoval_ops.pipeline.submit import main

    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                k: v
                for k, v in cfg.loggable().items()
                if k in ("table", "key", "label", "features", "n_clusters", "mlflow_uri")
            }
        )
    )
    # A real spark-submit of the embed job: its own JVM, Delta's package resolved by Spark (the
    # same coordinates configure_spark_with_delta_pip gave the test session).
    submit = Path(sys.executable).with_name("spark-submit")
    packages = spark.sparkContext.getConf().get("spark.jars.packages")
    assert packages is not None and packages.startswith("io.delta:delta-spark_4.2_2.13:")
    job = subprocess.run(
        [str(submit), "--master", "local[1]", "--packages", packages, "spark_jobs/embed.py", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        cwd=Path(__file__).parents[2],
        timeout=600,
    )
    assert job.returncode == 0, job.stderr[-2000:]
    printed = json.loads(job.stdout.strip().splitlines()[-1])
    assert printed["embed"] == 400
    detected = steps.Detection.from_dict(printed["detect"])
    assert detected.run.table_version == 0 and detected.run.config.method.n_clusters == cfg.method.n_clusters
    # The settings travel pinned in the reference: a YAML edited after the embed job changes nothing.
    config.write_text(config.read_text().replace(f"clusters: '{cfg.method.n_clusters}'", "clusters: '5'"))
    assert "clusters: '5'" in config.read_text()
    engine = SparkEngine(spark)
    ref = steps.decide(detected.run, engine)
    assert main("cluster", ["--ref", json.dumps(ref.to_dict())]) == 0
    for index in range(cfg.shards):
        fitting.train_shard(ref, index)
    ref = fitting.fit_model(ref, engine)
    assert main("propagate", ["--ref", json.dumps(ref.to_dict())]) == 0
    assert main("cluster", ["--config", str(config)]) == 2
    assert main("cluster", ["--config", str(config), "--ref", json.dumps(ref.to_dict())]) == 2
    assert steps.write(ref, engine) is not None
    assert steps.report(ref, engine, 1)["n_trainings"] == 2 + 4 + 6  # p = 4 as pinned, not the YAML's 5
    assert DeltaTable(str(cfg.source.table)).to_pyarrow_table().column("ecoval_value").null_count == 0
    assert DeltaTable(str(cfg.source.table)).to_pyarrow_table().column("ecoval_value").null_count == 0


def test_cli_runs_the_spark_engine(tmp_path) -> None:
    import json
    import subprocess
    import sys

    path = tmp_path / "events"
    write_deltalake(str(path), blob_rows(0, 300))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecoval_ops.cli",
            "run",
            "--table",
            str(path),
            "--key",
            "row_id",
            "--label",
            "label",
            "--features",
            "f0,f1,f2",
            "--n-clusters",
            "3",
            "--engine",
            "spark",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "refit" and summary["rows_valued"] == 300
    assert DeltaTable(str(path)).to_pyarrow_table().column("ecoval_value").null_count == 0
