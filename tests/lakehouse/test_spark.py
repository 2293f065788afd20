"""Spark and delta-rs on the same Delta table: each reads what the other wrote; SQL filters values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from ecoval_ops.lakehouse import ensure_value_columns, merge_values, read_watermark
from ecoval_ops.valuation import EcoVal
from tests.conftest import blobs

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.delta]


def test_spark_table_valued_by_delta_rs_and_filtered_with_spark_sql(spark, tmp_path) -> None:
    X, y = blobs(200, n_classes=2, d=3, noise=0.1, seed=8)
    path = str(tmp_path / "rows")
    rows = [(int(i), *map(float, X[i]), int(y[i])) for i in range(200)]
    spark.createDataFrame(rows, "row_id long, f0 double, f1 double, f2 double, label long").write.format("delta").save(
        path
    )

    source = DeltaTable(path).to_pyarrow_table().sort_by("row_id")
    assert source.num_rows == 200
    ensure_value_columns(path, label="label")
    features = np.column_stack([source.column(c).to_numpy() for c in ("f0", "f1", "f2")])
    labels = source.column("label").to_numpy()
    ev = EcoVal(n_clusters=3).fit(features[:150], labels[:150], features[150:], labels[150:])
    in_sample = ev.result_.to_arrow(source.column("row_id").to_numpy()[:150], "row_id")
    oos = ev.value_rows(features[150:], labels[150:]).to_arrow(source.column("row_id").to_numpy()[150:], "row_id")
    merge_values(path, pa.concat_tables([in_sample, oos]), key="row_id", run_id="r1", source_version=0)

    spark.read.format("delta").load(path).createOrReplaceTempView("rows")
    total, valued, clean = spark.sql(
        "SELECT count(*), count(ecoval_value), "
        "sum(CASE WHEN ecoval_value > 0 AND NOT ecoval_suspect THEN 1 ELSE 0 END) FROM rows"
    ).first()
    all_values = np.concatenate([ev.values_, ev.value(features[150:], labels[150:])])
    suspects = np.concatenate([ev.result_.suspect, ev.value_rows(features[150:], labels[150:]).suspect])
    assert (total, valued) == (200, 200)
    assert clean == int(np.sum((all_values > 0) & ~suspects))
    modes = dict(spark.sql("SELECT ecoval_mode, count(*) FROM rows GROUP BY ecoval_mode").collect())
    assert modes == {"in_sample": 150, "out_of_sample": 50}
    unchanged = spark.sql("SELECT sum(f0), sum(label) FROM rows").first()
    assert unchanged[0] == pytest.approx(float(X[:, 0].sum())) and unchanged[1] == int(y.sum())
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").collect()
    assert [r.operation for r in sorted(history, key=lambda r: r.version)] == ["WRITE", "ADD COLUMN", "MERGE"]
    assert read_watermark(path).table_version == 2


def test_spark_merge_is_idempotent_and_keeps_originals(spark, tmp_path) -> None:
    from datetime import UTC, datetime

    from ecoval_ops.exceptions import InvalidInputError
    from ecoval_ops.lakehouse.delta_spark import merge_values_spark

    X, y = blobs(120, n_classes=2, d=2, noise=0.1, seed=9)
    path = str(tmp_path / "t")
    spark.createDataFrame(
        [(int(i), float(X[i, 0]), float(X[i, 1]), int(y[i])) for i in range(120)],
        "row_id long, a double, b double, label long",
    ).write.format("delta").save(path)
    ensure_value_columns(path, label="label")
    ev = EcoVal(n_clusters=3).fit(X[:100], y[:100], X[100:], y[100:])
    values = ev.result_.to_arrow(np.arange(100), "row_id")
    values = values.append_column(
        "ecoval_valued_at", pa.array([datetime(2026, 11, 28, tzinfo=UTC)] * 100, pa.timestamp("us", tz="UTC"))
    )
    before = sorted(spark.read.format("delta").load(path).select("row_id", "a", "b", "label").collect())
    twice, once = tmp_path / "twice.parquet", tmp_path / "once.parquet"
    pq.write_table(pa.concat_tables([values, values]), twice)
    pq.write_table(values, once)

    with pytest.raises(InvalidInputError, match="duplicate keys"):
        merge_values_spark(spark, path, twice, key="row_id", run_id="s1", source_version=1)
    assert DeltaTable(path).version() == 1

    version = merge_values_spark(spark, path, once, key="row_id", run_id="s1", source_version=1)
    assert version == 2
    assert merge_values_spark(spark, path, once, key="row_id", run_id="s1", source_version=1) is None
    assert DeltaTable(path).version() == 2
    mark = read_watermark(path)
    assert (mark.source_version, mark.run_id, mark.table_version) == (1, "s1", 2)
    after = spark.read.format("delta").load(path)
    assert sorted(after.select("row_id", "a", "b", "label").collect()) == before
    read_back = DeltaTable(path).to_pyarrow_table().sort_by("row_id")
    np.testing.assert_allclose(read_back.column("ecoval_value").to_numpy()[:100], ev.values_)
    assert read_back.column("ecoval_value").null_count == 20
