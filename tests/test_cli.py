"""The `ecoval` command as a user runs it: a real subprocess, a real Delta table, real MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import blobs

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


def _ecoval(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecoval_ops.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def lake(tmp_path):
    X, y = blobs(300, n_classes=2, d=2, noise=0.1, seed=4)
    path = tmp_path / "events"
    write_deltalake(str(path), pa.table({"id": np.arange(300), "a": X[:, 0], "b": X[:, 1], "y": y}))
    return path


def test_run_with_yaml_config_and_json_summary(lake, tmp_path) -> None:
    (tmp_path / "run.yaml").write_text(f"table: {lake}\nkey: id\nlabel: y\nfeatures: a,b\nclusters: 3\n")
    out = _ecoval("run", "--config", "run.yaml", "--engine", "delta-rs", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "refit" and summary["rows_valued"] == 300
    assert (tmp_path / "mlflow.db").exists()
    assert DeltaTable(str(lake)).to_pyarrow_table().column("ecoval_value").null_count == 0
    again = _ecoval("run", "--config", "run.yaml", "--engine", "delta-rs", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to value" in again.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--label", "y; DROP TABLE x"], "not a plain identifier"),
        (["--features", "a,zz"], "has no column(s) ['zz']"),
        (["--table", "/nonexistent/table"], "is not a Delta table"),
    ],
)
def test_bad_input_is_one_line_without_traceback(lake, tmp_path, flags, message) -> None:
    base = {"--table": str(lake), "--key": "id", "--label": "y", "--features": "a,b"}
    base.update(dict(zip(flags[::2], flags[1::2], strict=True)))
    args = [x for pair in base.items() for x in pair]
    version = DeltaTable(str(lake)).version()
    out = _ecoval("run", *args, "--engine", "delta-rs", cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert DeltaTable(str(lake)).version() == version


@pytest.mark.spark
@pytest.mark.slow
def test_spark_run_from_a_plain_shell_is_quiet(lake, tmp_path) -> None:
    """The console script in a bare environment (no Makefile variables, no ECOVAL_DELTA_JARS):
    Spark resolves Delta's jars itself, and nothing but the summary is printed."""
    import os
    from pathlib import Path

    script = Path(sys.executable).with_name("ecoval")
    env = {"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    args = ["run", "--table", str(lake), "--key", "id", "--label", "y", "--features", "a,b", "--n-clusters", "3"]
    out = subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == ""
    assert out.stdout.startswith("refit: 300 rows valued") and len(out.stdout.strip().splitlines()) == 2
    assert DeltaTable(str(lake)).to_pyarrow_table().column("ecoval_value").null_count == 0


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path) -> None:
    # `ecoval sql ... | head -1`: the reader has gone when the command prints.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecoval_ops.cli", "sql", "--table", str(tmp_path / "t")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in stderr, stderr


def test_a_library_warning_is_printed_as_python_prints_it(tmp_path, monkeypatch, capsys) -> None:
    # A warning shown by another library (PYTHONWARNINGS=always shows SQLAlchemy's at the first
    # MLflow store) went through the command's own printer, which broke with a TypeError.
    import warnings

    from ecoval_ops import cli
    from ecoval_ops.exceptions import EcovalWarning

    def warns(args) -> int:
        warnings.warn("from a library", UserWarning, stacklevel=1)
        warnings.warn("fewer clusters", EcovalWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "_report", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["report", "--table", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("UserWarning: from a library") and "test_cli.py" in err[0]
    assert err[-1] == "ecoval: warning: fewer clusters"
