"""Crash safety (issue 6): real `ecoval run` processes killed with SIGKILL at the fault points.

The table must be at its previous version's content or fully written, never partial, and the
next run must complete the work.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.conftest import blob_rows, uuid_keyed

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow, pytest.mark.slow]

ORIGINAL = ["row_id", "f0", "f1", "f2", "label"]


def _originals(path) -> str:
    t = DeltaTable(str(path)).to_pyarrow_table(columns=ORIGINAL).sort_by("row_id")
    return hashlib.sha256(str(t.to_pydict()).encode()).hexdigest()


def _run(path, tmp_path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ECOVAL_FAULT_KILL"}
    if fault:
        env["ECOVAL_FAULT_KILL"] = fault
    return subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "run", "--engine", "delta-rs", "--table", str(path),
         "--key", "row_id", "--label", "label", "--features", "f0,f1,f2", "--n-clusters", "3", "--shards", "2",
         "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("fault", ["embedded", "shard_trained", "columns_added", "merged"])
def test_a_killed_run_leaves_no_partial_values_and_the_next_run_completes(tmp_path, fault) -> None:
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 300))
    originals = _originals(path)

    killed = _run(path, tmp_path, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    table = DeltaTable(str(path)).to_pyarrow_table()
    assert _originals(path) == originals and table.num_rows == 300
    if "ecoval_value" in table.column_names:
        nulls = table.column("ecoval_value").null_count
        # Either no row has a value (killed before the MERGE committed) or every row has one.
        assert nulls in (0, 300)
        assert (nulls == 0) == (fault == "merged")

    again = _run(path, tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["mode"] == ("noop" if fault == "merged" else "refit")
    table = DeltaTable(str(path)).to_pyarrow_table()
    assert table.column("ecoval_value").null_count == 0 and table.num_rows == 300
    assert _originals(path) == originals

    # A killed run that had opened its parent run left it RUNNING: the next run closed it as
    # KILLED and removed its workspace.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ecoval").experiment_id], run_view_type=ViewType.ALL)
    killed_parent = [] if fault == "embedded" else ["KILLED"]
    finished = [] if fault == "merged" else ["FINISHED"]  # after a committed MERGE the next run has nothing to do
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents) == finished + killed_parent
    assert list((path.parent / "_ecoval" / "train" / "runs").glob("*")) == []


@pytest.mark.parametrize("engine", ["delta-rs", pytest.param("spark", marks=pytest.mark.spark)])
def test_two_runs_on_one_table_at_once_leave_it_consistent(tmp_path, engine) -> None:
    # On a new table both runs create the embeddings table, add the value columns and MERGE at
    # about the same moment: each commit that loses is redone (or the run stops with one line).
    # They share a new SQLite MLflow store, which both would create, and the table is keyed by
    # UUID strings.
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), uuid_keyed(blob_rows(0, 300)))
    originals = _originals(path)
    env = {k: v for k, v in os.environ.items() if k != "ECOVAL_FAULT_KILL"}
    args = [sys.executable, "-m", "ecoval_ops.cli", "run", "--engine", engine, "--table", str(path),
            "--key", "row_id", "--label", "label", "--features", "f0,f1,f2", "--n-clusters", "3", "--json",
            "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    runs = [
        subprocess.Popen(args, cwd=tmp_path / name, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
        if (tmp_path / name).mkdir() is None
    ]
    outcomes = [(r.wait(timeout=600), r.stderr.read() if r.stderr else "") for r in runs]
    for code, err in outcomes:
        # Each run either committed (retrying a conflicting commit) or stopped with one line.
        assert code in (0, 2) and "Traceback" not in err, err
    assert any(code == 0 for code, _ in outcomes)
    table = DeltaTable(str(path)).to_pyarrow_table()
    assert table.num_rows == 300 and len(set(table.column("row_id").to_pylist())) == 300
    assert table.column("ecoval_value").null_count == 0
    assert _originals(path) == originals
