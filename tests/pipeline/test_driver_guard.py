"""The Spark engine reads no table into the driver: a refit and a night under a guard on every reader.

The guard wraps each way the driver can receive rows (delta-rs tables and datasets, pyarrow
datasets and Parquet files, Spark's collect, toArrow, toPandas, take) and fails any that hands it
more than :data:`LIMIT` rows. The run may bring the reference set (R rows), the scored validation
rows and small aggregates; the table has many times more rows than either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.engines import SparkEngine
from ecoval_ops.pipeline import run_valuation
from tests.conftest import blob_rows, run_config, uuid_keyed

pytestmark = [pytest.mark.integration, pytest.mark.spark]

ROWS, NIGHT, REFERENCE, VALIDATION = 3000, 600, 400, 200
LIMIT = 450
"""The most rows one read may bring to the driver: the reference set and a margin, far below the table."""


class DriverReadError(AssertionError):
    """A read brought more rows to the driver than the guard allows."""


def _check(rows: int, where: str) -> None:
    if rows > LIMIT:
        raise DriverReadError(f"{where} brought {rows} rows to the driver (limit {LIMIT})")


class _GuardedDataset:
    """A pyarrow dataset whose reads count the rows they bring."""

    def __init__(self, inner: Any, where: str) -> None:
        self._inner, self._where = inner, where

    def to_table(self, *args: Any, **kwargs: Any) -> Any:
        table = self._inner.to_table(*args, **kwargs)
        _check(table.num_rows, f"{self._where}.to_table")
        return table

    def to_batches(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        seen = 0
        for batch in self._inner.to_batches(*args, **kwargs):
            seen += batch.num_rows
            _check(seen, f"{self._where}.to_batches")
            yield batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    # Spark 4's classic DataFrame defines its own collect, toArrow, toPandas, take and tail.
    from pyspark.sql.classic.dataframe import DataFrame

    def counted(owner: Any, name: str, rows: Any) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            _check(rows(result), f"{getattr(owner, '__name__', owner)}.{name}")
            return result

        monkeypatch.setattr(owner, name, wrapper)

    counted(DeltaTable, "to_pyarrow_table", lambda t: t.num_rows)
    counted(pq, "read_table", lambda t: t.num_rows)
    for name in ("collect", "take", "tail"):
        counted(DataFrame, name, len)
    counted(DataFrame, "toArrow", lambda t: t.num_rows)
    counted(DataFrame, "toPandas", len)
    to_dataset, dataset = DeltaTable.to_pyarrow_dataset, ds.dataset
    monkeypatch.setattr(
        DeltaTable, "to_pyarrow_dataset", lambda self, *a, **k: _GuardedDataset(to_dataset(self, *a, **k), "delta")
    )
    monkeypatch.setattr(ds, "dataset", lambda *a, **k: _GuardedDataset(dataset(*a, **k), "parquet"))


def _copies(copies: int, suffix: str) -> pa.Table:
    """``copies`` jittered copies of the 1000 blob rows, each row keyed by a UUID and its copy."""
    base = uuid_keyed(blob_rows(0, 1000))
    rng = np.random.default_rng(len(suffix) + copies)
    parts = []
    for copy in range(copies):
        keys = pa.array([f"{k}-{suffix}{copy}" for k in base.column("row_id").to_pylist()])
        part = base.set_column(0, "row_id", keys)
        for name in ("f0", "f1", "f2"):
            jittered = part.column(name).to_numpy() + rng.normal(scale=0.05, size=part.num_rows)
            part = part.set_column(part.column_names.index(name), name, pa.array(jittered))
        parts.append(part)
    return pa.concat_tables(parts)


def test_a_spark_refit_and_night_read_no_table_into_the_driver(spark, tmp_path, guard) -> None:
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), _copies(ROWS // 1000, "copy"))
    cfg = run_config(
        path,
        tmp_path,
        engine="spark",
        n_clusters=4,
        validation_fraction=0.2,
        max_reference_rows=REFERENCE,
        validation_rows=VALIDATION,
    )
    # The guard is armed: a whole-table read fails on either side.
    with pytest.raises(DriverReadError):
        DeltaTable(str(path)).to_pyarrow_table()
    with pytest.raises(DriverReadError):
        spark.read.format("delta").load(str(path)).collect()

    engine = SparkEngine(spark)
    refit = run_valuation(cfg, engine)
    assert refit.mode == "refit" and refit.rows_valued == ROWS
    write_deltalake(str(path), _copies(1, "night").slice(0, NIGHT), mode="append", schema_mode="merge")
    nightly = run_valuation(cfg, engine)
    assert nightly.mode == "incremental" and nightly.rows_valued == NIGHT
    valued = spark.read.format("delta").load(str(path)).filter("ecoval_value IS NOT NULL").count()
    assert valued == ROWS + NIGHT
