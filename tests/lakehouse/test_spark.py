"""Spark and delta-rs on the same Delta table: each reads what the other wrote; SQL filters values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
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
    ensure_value_columns(path)
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
    suspects = np.concatenate([ev.intrinsic_, ev.value_rows(features[150:], labels[150:]).intrinsic]) < 0
    assert (total, valued) == (200, 200)
    assert clean == int(np.sum((all_values > 0) & ~suspects))
    modes = dict(spark.sql("SELECT ecoval_mode, count(*) FROM rows GROUP BY ecoval_mode").collect())
    assert modes == {"in_sample": 150, "out_of_sample": 50}
    unchanged = spark.sql("SELECT sum(f0), sum(label) FROM rows").first()
    assert unchanged[0] == pytest.approx(float(X[:, 0].sum())) and unchanged[1] == int(y.sum())
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").collect()
    assert [r.operation for r in sorted(history, key=lambda r: r.version)] == ["WRITE", "ADD COLUMN", "MERGE"]
    assert read_watermark(path).table_version == 2
