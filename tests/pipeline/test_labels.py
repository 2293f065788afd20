"""Labels as tables hold them: strings, booleans, gapped and nullable integers, on both engines,
through the registered model's out-of-sample path."""

from __future__ import annotations

import mlflow
import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.pipeline import DeltaRsEngine, SparkEngine, run_valuation
from tests.conftest import blobs, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]

KINDS = {
    "string": (lambda y: pa.array(np.array(["barolo", "chianti"])[y])),
    "boolean": (lambda y: pa.array(y.astype(bool))),
    "gapped-int": (lambda y: pa.array(np.array([10, 40])[y])),
    "nullable-int": (lambda y: pa.array(y.tolist(), pa.int64(), from_pandas=True)),
}


def _rows(kind: str, start: int, stop: int) -> pa.Table:
    X, y = blobs(400, n_classes=2, d=3, noise=0.1, seed=9)
    ids = np.arange(start, stop)
    label = KINDS[kind](y[ids])
    schema = pa.schema([("row_id", pa.int64()), ("f0", pa.float64()), ("f1", pa.float64()), ("f2", pa.float64()),
                        pa.field("label", label.type, nullable=True)])  # fmt: skip
    return pa.table([ids, X[ids, 0], X[ids, 1], X[ids, 2], label], schema=schema)


@pytest.mark.parametrize("engine", ["delta-rs", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])])
@pytest.mark.parametrize("kind", list(KINDS))
def test_labels_of_every_kind_are_valued_end_to_end(request, tmp_path, kind, engine) -> None:
    path = tmp_path / "lake" / "wines"
    write_deltalake(str(path), _rows(kind, 0, 300))
    cfg = run_config(path, tmp_path, engine=engine, clusters=3)
    runner = SparkEngine(request.getfixturevalue("spark")) if engine == "spark" else DeltaRsEngine()
    assert run_valuation(cfg, runner).rows_valued == 300
    write_deltalake(str(path), _rows(kind, 300, 340), mode="append", schema_mode="merge")
    nightly = run_valuation(cfg, runner)
    assert nightly.mode == "incremental" and nightly.rows_valued == 40
    table = DeltaTable(str(path)).to_pandas().sort_values("row_id").reset_index(drop=True)
    assert table["ecoval_value"].notna().all() and len(table) == 340
    assert table["label"].tolist() == _rows(kind, 0, 340).column("label").to_pylist()  # labels untouched

    mlflow.set_tracking_uri(cfg.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model_name}@current")
    new = table[table.row_id >= 300]
    predicted = model.predict(new[["f0", "f1", "f2", "label"]].reset_index(drop=True))
    np.testing.assert_allclose(predicted["ecoval_value"].to_numpy(), new["ecoval_value"].to_numpy(), rtol=1e-9)
