"""Bad input through `ecoval run` (issue 6): exit 2 with one line naming the problem, no
traceback, and the table exactly as it was (same Delta version, same content).

The cases call the command's ``main`` in this process; what only a process shows (a warning
printed as one line, the exit status of ten exits in a row) runs the command in a child.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import blobs

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


def _table(n: int = 120, **changes) -> pa.Table:
    X, y = blobs(n, n_classes=2, d=2, noise=0.1, seed=3)
    columns = {"id": np.arange(n), "a": X[:, 0], "b": X[:, 1], "y": y}
    columns.update(changes)
    return pa.table(columns)


def _state(path) -> tuple[int, str]:
    table = DeltaTable(str(path))
    data = table.to_pyarrow_table()
    return table.version(), hashlib.sha256(str(data.sort_by("id").to_pydict()).encode()).hexdigest()


@pytest.fixture
def ecoval_run(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``ecoval run --engine delta-rs FLAGS`` in this process from ``tmp_path``: its exit status and stderr."""
    from ecoval_ops.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)

    def run(*flags: str) -> tuple[int, str]:
        capsys.readouterr()
        with warnings.catch_warnings():
            # Python's default filters, as a plain `ecoval` process has them: pytest's would show
            # a library's deprecation on stderr the first time a test in this process meets it.
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            code = main(["run", "--engine", "delta-rs", *flags])
        return code, capsys.readouterr().err

    return run


def _run(tmp_path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "run", "--engine", "delta-rs", *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


def _nan(n: int = 120) -> np.ndarray:
    a = blobs(n, n_classes=2, d=2, noise=0.1, seed=3)[0][:, 0].copy()
    a[5] = np.nan
    return a


def _inf(n: int = 120) -> np.ndarray:
    a = blobs(n, n_classes=2, d=2, noise=0.1, seed=3)[0][:, 0].copy()
    a[7] = np.inf
    return a


CASES = {
    "missing label column": (_table(), ["--label", "nope"], "has no column(s) ['nope']"),
    "missing key column": (_table(), ["--key", "nope"], "has no column(s) ['nope']"),
    "unknown feature": (_table(), ["--features", "a,zz"], "has no column(s) ['zz']"),
    "NaN feature": (_table(a=_nan()), [], "feature column 'a' of"),
    "infinite feature": (_table(a=_inf()), [], "null, NaN or infinite values"),
    "null labels": (_table(y=pa.array([None] + [0, 1] * 59 + [0], pa.int64())), [], "column 'y' of"),
    "duplicate keys": (_table(id=np.r_[np.arange(119), 0]), [], "has 1 duplicate keys"),
    "duplicate string keys": (_table(id=[f"r{i % 119}" for i in range(120)]), [], "has 1 duplicate keys"),
    "timestamp key": (
        _table(id=pa.array(np.arange(120) * 1_000_000, pa.timestamp("us", tz="UTC"))),
        [],
        "key column 'id' of",
    ),
    "single class": (_table(y=np.zeros(120, np.int64)), [], "has a single class (0)"),
    "empty table": (_table().slice(0, 0), [], "is empty"),
    "SQL in an identifier": (_table(), ["--label", "y; DROP TABLE x"], "not a plain identifier"),
    "SQL in a feature": (_table(), ["--features", "a,b) OR (1=1"], "not a plain identifier"),
    "unreachable MLflow": (_table(), ["--mlflow-uri", "http://127.0.0.1:9"], "is not reachable"),
    "refused MLflow store": (_table(), ["--mlflow-uri", "file:./mlruns"], "cannot use the tracking store"),
    "MLflow database without its driver": (
        _table(),
        ["--mlflow-uri", "postgresql://ecoval:s3cret-pw@127.0.0.1:9/mlflow"],
        "cannot use the tracking store postgresql://***@127.0.0.1:9/mlflow",
    ),
    # psycopg2 is installed: MLflow itself would retry the refused connection for minutes.
    "MLflow database that does not answer": (
        _table(),
        ["--mlflow-uri", "postgresql+psycopg2://ecoval:s3cret-pw@127.0.0.1:9/mlflow"],
        "cannot use the tracking store postgresql+psycopg2://***@127.0.0.1:9/mlflow: [Errno 111] Connection refused",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_and_leaves_the_table(tmp_path, ecoval_run, case) -> None:
    data, flags, message = CASES[case]
    path = tmp_path / "lake" / "t"
    write_deltalake(str(path), data)
    before = _state(path)
    base = {"--table": str(path), "--key": "id", "--label": "y", "--features": "a,b"}
    base.update(dict(zip(flags[::2], flags[1::2], strict=True)))
    code, stderr = ecoval_run(*[x for pair in base.items() for x in pair])
    assert code == 2, stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "s3cret" not in stderr
    assert _state(path) == before


def test_a_path_that_is_not_a_delta_table(tmp_path, ecoval_run) -> None:
    (tmp_path / "plain").mkdir()
    code, stderr = ecoval_run("--table", str(tmp_path / "plain"), "--key", "id", "--label", "y", "--features", "a")
    assert code == 2 and "is not a Delta table" in stderr and "Traceback" not in stderr


def test_validation_labels_unseen_in_training(tmp_path, ecoval_run) -> None:
    path, valid = tmp_path / "lake" / "t", tmp_path / "lake" / "v"
    write_deltalake(str(path), _table())
    write_deltalake(str(valid), _table(20, y=np.full(20, 7)))
    before = _state(path)
    code, stderr = ecoval_run("--table", str(path), "--key", "id", "--label", "y", "--features", "a,b",
                              "--validation-table", str(valid))  # fmt: skip
    assert code == 2 and "20 rows with labels not in" in stderr and "[7]" in stderr
    assert _state(path) == before


def test_fewer_rows_than_two_clusters_need(tmp_path, ecoval_run) -> None:
    path, valid = tmp_path / "lake" / "t", tmp_path / "lake" / "v"
    write_deltalake(str(path), _table(3, y=np.array([0, 1, 0])))
    write_deltalake(str(valid), _table(6))
    before = _state(path)
    code, stderr = ecoval_run("--table", str(path), "--key", "id", "--label", "y", "--features", "a,b",
                              "--validation-table", str(valid))  # fmt: skip
    assert code == 2 and "3 training rows are too few: 2 clusters of at least 2 rows need 4" in stderr
    assert _state(path) == before


def test_too_many_clusters_for_the_rows_warns_and_reduces_p(tmp_path) -> None:
    # In a child: the warning is printed as one line by the command, where pytest raises it.
    path = tmp_path / "lake" / "t"
    write_deltalake(str(path), _table(12))
    out = _run(tmp_path, "--table", str(path), "--key", "id", "--label", "y", "--features", "a,b",
               "--n-clusters", "8", "--validation-fraction", "0.2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ecoval: warning: 8 clusters asked for" in out.stderr and "Traceback" not in out.stderr
    assert DeltaTable(str(path)).to_pyarrow_table().column("ecoval_value").null_count == 0


def test_the_command_never_aborts_at_exit(tmp_path) -> None:
    # delta-rs#2184: without exit_now about one exit in fifteen aborted (SIGABRT, 134) after the
    # work was done; ten runs of an error path that reads the table would show it.
    path = tmp_path / "lake" / "t"
    write_deltalake(str(path), _table(y=pa.array([None] + [0, 1] * 59 + [0], pa.int64())))
    codes = [_run(tmp_path, "--table", str(path), "--key", "id", "--label", "y", "--features", "a,b").returncode
             for _ in range(10)]  # fmt: skip
    assert codes == [2] * 10
