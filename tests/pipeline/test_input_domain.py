"""The input domain of a run, as tables hold it (issue 23), on both engines: keys of every type a
Delta table keys rows by, labels of every type and class count, the key in the middle of the
table beside columns ecoval does not read (struct, map, binary, decimal, names that need quoting).

Each case is a refit, then an incremental night of new rows valued out of sample, then the
registered model's ``predict`` and ``explain`` of a member and of a new row. Key types ecoval
cannot key a run by are refused before anything is written, naming the supported types.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.explain import explain_row
from ecoval_ops.keys import SUPPORTED_KEY_TYPES
from ecoval_ops.pipeline import DeltaRsEngine, SparkEngine, run_valuation
from tests.conftest import blobs, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]

ROWS, NEW = 300, 40

KEYS = {
    "int32": lambda ids: pa.array(ids, pa.int32()),
    # Above 2^53: a key that went through a float64 anywhere would come back changed.
    "int64-above-2^53": lambda ids: pa.array(ids.astype(np.int64) * 7_919 + 2**60, pa.int64()),
    "string": lambda ids: pa.array([f"r{i:06d}" for i in ids]),
    "uuid": lambda ids: pa.array([str(uuid.UUID(int=int(i) * 2_654_435_761 + 1)) for i in ids]),
    "unicode-with-spaces": lambda ids: pa.array([f"clé n° {i} ✓ Ω" for i in ids]),
}

LABELS = {
    "int": lambda y: pa.array(y, pa.int64()),
    "gapped-int": lambda y: pa.array(y * 10 + 3, pa.int64()),
    "string": lambda y: pa.array(np.array([f"class {c}" for c in range(10)])[y]),
    "boolean": lambda y: pa.array(y.astype(bool)),
    "nullable-int": lambda y: pa.array(y.tolist(), pa.int32(), from_pandas=True),
}

# Every key type and every label type, each with 2 and 10 classes somewhere.
CASES = [
    ("int32", "int", 10),
    ("int64-above-2^53", "gapped-int", 10),
    ("string", "string", 10),
    ("uuid", "boolean", 2),
    ("unicode-with-spaces", "nullable-int", 2),
    ("string", "int", 2),
]

NOT_READ = {
    # Columns ecoval never reads, of types it does not value; names that SQL must quote.
    "order": lambda ids: pa.array([{"a": int(i), "b": f"s{i}"} for i in ids]),
    "1st-seen": lambda ids: pa.array([[(f"k{i}", float(i))] for i in ids], pa.map_(pa.string(), pa.float64())),
    "x.y": lambda ids: pa.array([bytes([i % 256, 7]) for i in ids], pa.binary()),
    "Größe": lambda ids: pa.array([decimal.Decimal(int(i)) / 100 for i in ids], pa.decimal128(12, 2)),
}


def _rows(key: str, label: str, n_classes: int, start: int, stop: int) -> pa.Table:
    X, y = blobs(ROWS + NEW, n_classes=n_classes, d=3, noise=0.1, seed=11)
    ids = np.arange(start, stop)
    labels = LABELS[label](y[ids])
    columns = {
        "order": NOT_READ["order"](ids),
        "f0": pa.array(X[ids, 0]),
        "1st-seen": NOT_READ["1st-seen"](ids),
        "row_id": KEYS[key](ids),
        "f1": pa.array(X[ids, 1]),
        "x.y": NOT_READ["x.y"](ids),
        "label": labels,
        "f2": pa.array(X[ids, 2]),
        "Größe": NOT_READ["Größe"](ids),
    }
    return pa.table(columns)


def _engine(request: pytest.FixtureRequest, engine: str):
    return SparkEngine(request.getfixturevalue("spark")) if engine == "spark" else DeltaRsEngine()


def _value_a_refit_and_a_night(request, tmp_path, engine: str, case) -> tuple[pa.Table, object]:
    key, label, n_classes = case
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), _rows(key, label, n_classes, 0, ROWS))
    cfg = run_config(path, tmp_path, engine=engine, n_clusters=3)
    runner = _engine(request, engine)
    refit = run_valuation(cfg, runner)
    assert (refit.mode, refit.rows_valued) == ("refit", ROWS)
    write_deltalake(str(path), _rows(key, label, n_classes, ROWS, ROWS + NEW), mode="append", schema_mode="merge")
    night = run_valuation(cfg, runner)
    assert (night.mode, night.rows_valued) == ("incremental", NEW)
    return DeltaTable(str(path)).to_pyarrow_table(), cfg


ENGINES = ["delta-rs", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-key-{c[1]}-label-{c[2]}-classes")
def test_every_key_and_label_type_is_valued_through_predict_and_explain(request, tmp_path, engine, case) -> None:
    key, label, n_classes = case
    table, cfg = _value_a_refit_and_a_night(request, tmp_path, engine, case)
    original = _rows(key, label, n_classes, 0, ROWS + NEW)
    # Every original column (the key, the labels, the unread types) as it was, of its own type.
    after, before = table.sort_by("row_id"), original.sort_by("row_id")
    for name in original.column_names:
        assert after.column(name).combine_chunks().equals(before.column(name).combine_chunks()), name
    assert table.num_rows == ROWS + NEW and table.column("ecoval_value").null_count == 0
    assert table.schema.field("ecoval_suggested_label").type == original.schema.field("label").type

    mlflow.set_tracking_uri(cfg.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model_name}@current")
    members = model.unwrap_python_model().member_keys
    # The registered model's member keys are table keys, of the key column's own Arrow type.
    assert members.type == original.schema.field("row_id").type and len(members) > 0
    assert pc.all(pc.is_in(members, value_set=original.column("row_id"))).as_py()

    data = table.to_pandas()
    new = data[data.row_id.isin(original.column("row_id").to_pylist()[ROWS:])]
    assert len(new) == NEW and (new.ecoval_mode == "out_of_sample").all()
    predicted = model.predict(new[["f0", "f1", "f2", "label"]].reset_index(drop=True))
    np.testing.assert_allclose(predicted["ecoval_value"].to_numpy(), new["ecoval_value"].to_numpy(), rtol=1e-9)

    member = data[data.ecoval_mode == "in_sample"].iloc[0]
    for row in (member, new.iloc[-1]):
        e = explain_row(str(cfg.source.table), str(row.row_id), tracking_uri=cfg.tracking_uri)
        assert e.key == row.row_id and type(e.key) is type(original.column("row_id")[0].as_py())
        assert e.value == pytest.approx(row.ecoval_value, abs=1e-12)
        neighbours = pa.array([n.key for n in e.neighbours], members.type)
        assert pc.all(pc.is_in(neighbours, value_set=members)).as_py() and row.row_id not in neighbours.to_pylist()
    if engine == "spark":
        # The hold-out split and the reference draw hash the key's text: both engines read it alike.
        local = _value_a_refit_and_a_night(request, tmp_path / "delta-rs", "delta-rs", case)[0].sort_by("row_id")
        for name in ("row_id", "ecoval_mode", "ecoval_cluster", "ecoval_suspect"):
            assert after.column(name).equals(local.column(name)), name
        np.testing.assert_allclose(
            after.column("ecoval_value").to_numpy(), local.column("ecoval_value").to_numpy(), rtol=0, atol=1e-9
        )


REFUSED = {
    "date": pa.array([datetime.date(2024, 1, 1) + datetime.timedelta(days=i) for i in range(ROWS)]),
    "timestamp": pa.array(
        [datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(minutes=i) for i in range(ROWS)],
        pa.timestamp("us", tz="UTC"),
    ),
    "decimal": pa.array([decimal.Decimal(i) for i in range(ROWS)], pa.decimal128(20, 0)),
    "binary": pa.array([str(i).encode() for i in range(ROWS)], pa.binary()),
    "double": pa.array(np.arange(ROWS, dtype=np.float64)),
    "boolean": pa.array(np.arange(ROWS) % 2 == 0),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_key_type_that_cannot_key_a_run_is_refused_naming_the_supported_ones(tmp_path, kind) -> None:
    path = tmp_path / "lake" / "train"
    data = _rows("int32", "int", 2, 0, ROWS)
    write_deltalake(str(path), data.set_column(data.column_names.index("row_id"), "row_id", REFUSED[kind]))
    with pytest.raises(InvalidInputError) as raised:
        run_valuation(run_config(path, tmp_path, engine="delta-rs", n_clusters=3))
    message = str(raised.value)
    assert f"key column 'row_id' of {path}@v0 holds" in message and SUPPORTED_KEY_TYPES in message
    assert "\n" not in message
    assert DeltaTable(str(path)).version() == 0
