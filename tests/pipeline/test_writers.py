"""Upstream writers keep working after ecoval adds its columns, and a separate values table
leaves the source untouched (for tables another team owns)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import SchemaMismatchError

from ecoval_ops.pipeline import DeltaRsEngine, SparkEngine, run_valuation
from tests.conftest import blob_rows, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


def test_delta_rs_appends_need_schema_merge_after_a_run(tmp_path) -> None:
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=3)
    run_valuation(cfg)
    # The team's ingest job, unchanged, now fails: the table has more columns than its batch.
    with pytest.raises(SchemaMismatchError):
        write_deltalake(str(path), blob_rows(300, 320), mode="append")
    write_deltalake(str(path), blob_rows(300, 320), mode="append", schema_mode="merge")
    assert run_valuation(cfg).rows_valued == 20


@pytest.mark.spark
@pytest.mark.slow
def test_spark_appends_with_the_original_columns_after_a_run(spark, tmp_path) -> None:
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="spark", n_clusters=3)
    run_valuation(cfg, SparkEngine(spark))
    spark.createDataFrame(blob_rows(300, 320).to_pandas()).write.format("delta").mode("append").save(str(path))
    nightly = run_valuation(cfg, SparkEngine(spark))
    assert nightly.mode == "incremental" and nightly.rows_valued == 20
    assert spark.read.format("delta").load(str(path)).filter("ecoval_value IS NULL").count() == 0


@pytest.mark.parametrize("engine", ["delta-rs", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])])
def test_a_values_table_leaves_the_source_as_it_was(request, tmp_path, engine) -> None:
    path, values = tmp_path / "lake" / "train", tmp_path / "lake" / "train_values"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine=engine, n_clusters=3, values_table=str(values))
    runner = SparkEngine(request.getfixturevalue("spark")) if engine == "spark" else DeltaRsEngine()
    assert run_valuation(cfg, runner).rows_valued == 300
    write_deltalake(str(path), blob_rows(300, 340), mode="append")  # no schema_mode: the schema never changed
    nightly = run_valuation(cfg, runner)
    assert (nightly.mode, nightly.rows_valued) == ("incremental", 40)
    assert run_valuation(cfg, runner).mode == "noop"
    source = DeltaTable(str(path))
    assert source.version() == 1 and "ecoval_value" not in source.schema().to_arrow().names
    table = DeltaTable(str(values)).to_pyarrow_table()
    assert table.num_rows == 340 and table.column("ecoval_value").null_count == 0
    assert sorted(table.column("row_id").to_pylist()) == list(range(340))
    assert table.schema.field("ecoval_suggested_label").type == source.to_pyarrow_table().schema.field("label").type


@pytest.mark.spark
@pytest.mark.slow
def test_sql_joins_the_values_table_and_creates_the_views(spark, tmp_path) -> None:
    from ecoval_ops.lakehouse.queries import create_views, ready_queries

    path, values = tmp_path / "lake" / "train", tmp_path / "lake" / "train_values"
    write_deltalake(str(path), blob_rows(0, 300))
    run_valuation(run_config(path, tmp_path, engine="delta-rs", n_clusters=3, values_table=str(values)))
    write_deltalake(str(path), blob_rows(300, 310), mode="append")
    out = subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "sql", "--table", str(path), "--values-table", str(values),
         "--key", "row_id"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "-- the source rows with their value columns" in out.stdout and "LEFT JOIN" in out.stdout
    queries = ready_queries(path, values=values, key="row_id")
    joined = spark.sql(queries["the source rows with their value columns"])
    assert joined.count() == 310 and joined.filter("ecoval_value IS NULL").count() == 10
    assert "f0" in joined.columns and "ecoval_suspect" in joined.columns
    counts = create_views(spark, path, "train", values=values, key="row_id")
    assert counts["train_ecoval_valued"] == 310
    direct = DeltaTable(str(values)).to_pandas()
    assert counts["train_ecoval_clean"] == int(((direct.ecoval_value > 0) & ~direct.ecoval_suspect).sum())
    bad = subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "sql", "--table", str(path), "--values-table", str(values)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "give --key" in bad.stderr
