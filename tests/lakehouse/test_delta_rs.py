"""Value columns on real Delta tables through delta-rs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse import (
    VALUE_COLUMNS,
    check_identifier,
    ensure_value_columns,
    merge_values,
    read_watermark,
)
from ecoval_ops.valuation import EcoVal
from tests.conftest import blobs

pytestmark = [pytest.mark.integration, pytest.mark.delta]

ORIGINAL = ["row_id", "f0", "f1", "label"]


@pytest.fixture
def table(tmp_path):
    X, y = blobs(120, n_classes=2, d=2, noise=0.1, seed=1)
    path = tmp_path / "train"
    write_deltalake(str(path), pa.table({"row_id": np.arange(120) * 7, "f0": X[:, 0], "f1": X[:, 1], "label": y}))
    return path


def _checksum(path, columns=ORIGINAL) -> str:
    t = DeltaTable(str(path)).to_pyarrow_table(columns=columns).sort_by("row_id")
    return hashlib.sha256(b"".join(np.asarray(t.column(c)).tobytes() for c in columns)).hexdigest()


def _values(path, run_id="run-1"):
    t = DeltaTable(str(path)).to_pyarrow_table(columns=ORIGINAL).sort_by("row_id")
    X = np.column_stack([t.column("f0").to_numpy(), t.column("f1").to_numpy()])
    y = t.column("label").to_numpy()
    ev = EcoVal(n_clusters=3).fit(X[:100], y[:100], X[100:], y[100:])
    result = ev.result_.to_arrow(t.column("row_id").to_numpy()[:100], "row_id")
    n = result.num_rows
    return result.append_column("ecoval_run_id", pa.array([run_id] * n)).append_column(
        "ecoval_valued_at", pa.array([datetime(2026, 11, 28, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC"))
    )


def test_value_columns_are_added_once(table) -> None:
    version = ensure_value_columns(table, label="label")
    assert version == 1
    fields = {f.name: f for f in DeltaTable(str(table)).schema().fields}
    assert set(VALUE_COLUMNS) <= set(fields)
    # The suggested label takes the label column's type.
    assert fields["ecoval_suggested_label"].type == fields["label"].type
    assert ensure_value_columns(table, label="label") is None
    assert DeltaTable(str(table)).version() == 1


def test_a_table_valued_before_the_suggestion_columns_gains_them_once(table) -> None:
    ensure_value_columns(table, label=None)
    fields = {f.name for f in DeltaTable(str(table)).schema().fields}
    assert "ecoval_suggested_label" not in fields and "ecoval_label_confidence" in fields
    assert ensure_value_columns(table, label="label") == 2
    assert ensure_value_columns(table, label="label") is None


def test_merge_writes_values_keeps_originals_and_is_idempotent(table) -> None:
    before = _checksum(table)
    ensure_value_columns(table, label="label")
    values = _values(table)
    version = merge_values(table, values, key="row_id", run_id="run-1", source_version=0)
    assert version == 2
    assert _checksum(table) == before
    out = DeltaTable(str(table)).to_pyarrow_table().sort_by("row_id")
    assert out.num_rows == 120
    valued = out.filter(pa.compute.is_valid(out.column("ecoval_value")))
    assert valued.num_rows == 100
    expected = values.sort_by("row_id")
    np.testing.assert_array_equal(valued.column("ecoval_value").to_numpy(), expected.column("ecoval_value").to_numpy())
    assert set(valued.column("ecoval_mode").to_pylist()) == {"in_sample"}
    assert merge_values(table, values, key="row_id", run_id="run-1", source_version=0) is None
    assert DeltaTable(str(table)).version() == 2
    mark = read_watermark(table)
    assert (mark.source_version, mark.run_id, mark.table_version) == (0, "run-1", 2)


def test_a_table_never_valued_has_no_watermark(table) -> None:
    assert read_watermark(table) is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda v: v.set_column(0, "row_id", pa.array(np.zeros(v.num_rows, dtype=np.int64))), "duplicate keys"),
        (lambda v: v.set_column(0, "row_id", pa.array(np.arange(v.num_rows) + 10_000)), "100 valued keys are not in"),
        (lambda v: v.append_column("label", pa.array(np.zeros(v.num_rows, dtype=np.int64))), "unknown: \\['label'\\]"),
    ],
    ids=["duplicate keys", "unknown keys", "original column"],
)
def test_bad_values_write_nothing(table, mutate, message) -> None:
    ensure_value_columns(table, label="label")
    before = (DeltaTable(str(table)).version(), _checksum(table))
    with pytest.raises(InvalidInputError, match=message):
        merge_values(table, mutate(_values(table)), key="row_id", run_id="run-x", source_version=0)
    assert (DeltaTable(str(table)).version(), _checksum(table)) == before


def test_identifiers_are_checked_before_sql(table) -> None:
    ensure_value_columns(table, label="label")
    with pytest.raises(InvalidInputError, match="not a plain identifier"):
        merge_values(table, _values(table), key="row_id; DROP TABLE x", run_id="r", source_version=0)
    for bad in ["label; DROP TABLE x", "a.b", "1abc", "", "x" * 129, None]:
        with pytest.raises(InvalidInputError, match="not a plain identifier"):
            check_identifier(bad, "label column")
    assert check_identifier("_Label_2", "label column") == "_Label_2"


def test_a_path_that_is_not_a_delta_table(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="is not a Delta table"):
        ensure_value_columns(tmp_path)


def test_the_errors_callers_branch_on_are_typed(table, tmp_path, monkeypatch) -> None:
    from ecoval_ops.exceptions import (
        ConcurrentWriteError,
        DuplicateKeyError,
        EcovalError,
        MissingColumnError,
        TableNotFoundError,
    )
    from ecoval_ops.lakehouse import value_writes
    from ecoval_ops.lakehouse.source import SourceColumns
    from ecoval_ops.lakehouse.source_checks import check_source
    from ecoval_ops.lakehouse.tables import open_table

    with pytest.raises(TableNotFoundError, match="is not a Delta table") as missing:
        open_table(tmp_path / "nowhere")
    assert isinstance(missing.value, (InvalidInputError, FileNotFoundError))
    with pytest.raises(TableNotFoundError, match="at version 9"):
        open_table(table, 9)
    columns = SourceColumns("row_id", "label", ("f0", "nope"))
    with pytest.raises(MissingColumnError, match=r"has no column\(s\) \['nope'\]") as lookup:
        check_source(columns, table, 0)
    assert isinstance(lookup.value, LookupError) and "'" not in str(lookup.value)[:1]
    doubled = tmp_path / "doubled"
    write_deltalake(str(doubled), pa.table({"row_id": [1, 1], "label": [0, 1], "f0": [0.0, 1.0]}))
    with pytest.raises(DuplicateKeyError, match="has 1 duplicate keys") as duplicate:
        check_source(SourceColumns("row_id", "label", ("f0",)), doubled, 0)
    assert isinstance(duplicate.value, ValueError)
    attempts = []

    def conflicting() -> None:
        attempts.append(1)
        raise RuntimeError("conflict")

    monkeypatch.setattr(value_writes, "MERGE_BACKOFF_S", 0.0)
    with pytest.raises(ConcurrentWriteError, match="changed under 5 attempts of the test commit") as conflict:
        value_writes.retry_conflicts(table, RuntimeError, conflicting, what="the test commit")
    assert len(attempts) == value_writes.MERGE_ATTEMPTS
    assert isinstance(conflict.value, (EcovalError, RuntimeError))
