"""Faults under the real scheduler (issue 14, test 4 and defect a): a shard's process killed with
SIGKILL is retried and every row is valued once; a failed shard fails the run, and the MLflow
parent is closed FAILED only after every other task has ended; a run killed outside Airflow is
closed KILLED by the next nightly run of its table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.process import FAULT_ENV
from tests.conftest import blob_rows
from tests.stack.client import ApiError
from tests.stack.services import GPU_POOL

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

DAG = "ecoval_nightly"


def _start(stack, name: str, rows: int) -> tuple[str, object]:
    table = stack.lakehouse / name
    write_deltalake(str(table), blob_rows(0, rows))
    stack.api("PATCH", f"pools/{GPU_POOL}", {"pool": GPU_POOL, "slots": 1, "include_deferred": False})
    conf = {"table": str(table), "key": "row_id", "label": "label", "features": "f0,f1,f2", "engine": "delta-rs",
            "n_clusters": 4, "shards": 3}  # fmt: skip
    return stack.trigger(DAG, conf), table


def _shard(stack, run_id: str, index: int) -> dict:
    return dict(stack.api("GET", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/train_shard/{index}"))


def _when_running(stack, run_id: str, index: int) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            ti = _shard(stack, run_id, index)
        except ApiError as e:  # not mapped before cluster has ended
            assert e.code == 404, e
            time.sleep(0.5)
            continue
        if ti["state"] == "running" and ti["pid"]:
            return ti
        assert ti["state"] not in ("success", "failed"), f"shard {index} ended ({ti['state']}) unseen running"
        time.sleep(0.1)
    raise TimeoutError(f"shard {index} never ran")


def _children(stack, parent_id: str) -> list:
    client = stack.mlflow()
    parent = client.get_run(parent_id)
    return list(
        client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    )


def _parent_id(stack, run_id: str) -> str:
    xcom = stack.api("GET", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/decide/xcomEntries/return_value")
    return str(xcom["value"]["run_id"])


def test_a_shard_killed_with_sigkill_is_retried_and_every_row_is_valued_once(stack) -> None:
    run_id, table = _start(stack, "faults_sigkill", 1000)
    running = _when_running(stack, run_id, 0)
    os.kill(running["pid"], signal.SIGKILL)

    assert stack.wait_run(DAG, run_id) == "success", stack.states(DAG, run_id)
    assert _shard(stack, run_id, 0)["try_number"] == 2
    values = DeltaTable(str(table)).to_pyarrow_table(columns=["row_id", "ecoval_value"])
    assert values.num_rows == 1000
    assert pc.count_distinct(values.column("row_id")).as_py() == 1000
    assert values.column("ecoval_value").null_count == 0
    shards = sorted(c.data.tags["ecoval.shard"] for c in _children(stack, _parent_id(stack, run_id)))
    assert shards == ["shard-0", "shard-1", "shard-2"]


def test_a_failed_shard_fails_the_run_and_the_parent_closes_after_the_other_shards(stack) -> None:
    run_id, _ = _start(stack, "faults_failed_shard", 1000)
    _when_running(stack, run_id, 0)
    # Shard 1 fails while shard 0 runs and shard 2 waits for the pool's slot.
    stack.api("PATCH", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/train_shard/1", {"new_state": "failed"})

    assert stack.wait_run(DAG, run_id) == "failed"
    states = stack.states(DAG, run_id)
    assert states["train_shard[0]"] == "success" and states["train_shard[2]"] == "success", states
    assert states["mark_failed"] == "failed" and states["write"] == "upstream_failed", states
    parent = stack.mlflow().get_run(_parent_id(stack, run_id))
    assert parent.info.status == "FAILED"
    last_shard_end = max(datetime.fromisoformat(_shard(stack, run_id, i)["end_date"]) for i in (0, 2))
    assert parent.info.end_time / 1000 >= last_shard_end.timestamp()


def test_a_run_killed_outside_airflow_is_closed_by_the_next_nightly_run(stack, tmp_path) -> None:
    table = stack.lakehouse / "faults_killed_cli"
    write_deltalake(str(table), blob_rows(0, 300))
    env = {**os.environ, FAULT_ENV: "shard_trained"}
    killed = subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "run", "--engine", "delta-rs", "--table", str(table),
         "--key", "row_id", "--label", "label", "--features", "f0,f1,f2", "--n-clusters", "3",
         "--mlflow-uri", stack.mlflow_uri],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    client = stack.mlflow()
    experiment = client.get_experiment_by_name("ecoval").experiment_id
    (orphan,) = client.search_runs(
        [experiment], filter_string=f"attributes.status = 'RUNNING' and tags.`ecoval.table` = '{table}'"
    )
    workspace = table.parent / "_ecoval" / table.name / "runs" / orphan.info.run_id
    assert workspace.exists()

    run_id = stack.trigger(DAG, {"table": str(table), "key": "row_id", "label": "label", "features": "f0,f1,f2",
                                 "engine": "delta-rs", "n_clusters": 3})  # fmt: skip
    assert stack.wait_run(DAG, run_id) == "success", stack.states(DAG, run_id)
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert not workspace.exists()
    assert "closed MLflow run" in stack.log(DAG, run_id, "decide")
