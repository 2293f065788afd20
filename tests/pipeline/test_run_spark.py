"""`run_valuation` with the Spark engine, and the engines reading each other's writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse import read_watermark
from ecoval_ops.pipeline import DeltaRsEngine, SparkEngine, run_valuation
from tests.conftest import blob_rows, blobs, run_config

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.delta, pytest.mark.mlflow, pytest.mark.slow]


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 400))
    return run_config(path, tmp_path, engine="spark", clusters=4)


def test_spark_engine_refit_then_delta_rs_incremental(spark, cfg) -> None:
    first = run_valuation(cfg, SparkEngine(spark))
    assert first.mode == "refit" and first.rows_valued == 400 and first.n_trainings == 12
    assert run_valuation(cfg, SparkEngine(spark)).mode == "noop"
    write_deltalake(str(cfg.table), blob_rows(400, 450), mode="append", schema_mode="merge")
    nightly = run_valuation(cfg, DeltaRsEngine())
    assert nightly.mode == "incremental" and nightly.rows_valued == 50
    table = spark.read.format("delta").load(str(cfg.table))
    assert table.count() == 450 and table.filter("ecoval_value IS NULL").count() == 0
    assert read_watermark(cfg.table).run_id == nightly.run_id
    by_mode = dict(table.groupBy("ecoval_mode").count().collect())
    assert by_mode["out_of_sample"] >= 50


def test_spark_engine_reports_null_features_and_writes_nothing(spark, cfg) -> None:
    broken = blob_rows(400, 410).set_column(1, "f0", pa.array([None] * 10, pa.float64()))
    write_deltalake(str(cfg.table), broken, mode="append")
    version = DeltaTable(str(cfg.table)).version()
    with pytest.raises(InvalidInputError, match=r"feature column 'f0' of .*@v1 has 10 null, NaN or infinite values"):
        run_valuation(cfg, SparkEngine(spark))
    assert DeltaTable(str(cfg.table)).version() == version


def test_engines_give_the_same_values_on_the_same_table(spark, cfg, tmp_path) -> None:
    twin = tmp_path / "twin"
    write_deltalake(str(twin), blob_rows(0, 400))
    twin_cfg = cfg.model_copy(update={"table": twin, "model_name": "ecoval_twin"})
    run_valuation(cfg, SparkEngine(spark))
    run_valuation(twin_cfg, DeltaRsEngine())
    columns = ["row_id", "ecoval_value", "ecoval_intrinsic", "ecoval_extrinsic", "ecoval_cluster", "ecoval_mode"]
    a = DeltaTable(str(cfg.table)).to_pyarrow_table(columns=columns).sort_by("row_id")
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
    table = DeltaTable(str(cfg.table)).to_pyarrow_table()
    assert table.column("ecoval_value").null_count == 0
    assert set(table.column("ecoval_cluster").to_pylist()) <= set(range(4))


def test_spark_engine_reads_an_embedding_column(spark, tmp_path) -> None:
    X, y = blobs(200, n_classes=2, d=4, noise=0.1, seed=6)
    path = tmp_path / "emb"
    write_deltalake(str(path), pa.table({"id": np.arange(200), "emb": [list(r) for r in X], "y": y}))
    cfg = run_config(path, tmp_path, engine="spark", embedding=True, clusters=3)
    rows = SparkEngine(spark).read_rows(cfg)
    np.testing.assert_allclose(rows.X[np.argsort(rows.keys)], X)
    assert run_valuation(cfg, SparkEngine(spark)).rows_valued == 200
