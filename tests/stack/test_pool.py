"""The pool ``ecoval_gpu`` under the real scheduler: one slot runs the LCO shards one after
another, three let them overlap (issue 14, test 2; ``dag.test()`` ignores pools)."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest
from deltalake import write_deltalake

from tests.conftest import blob_rows
from tests.stack.services import GPU_POOL

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

DAG = "ecoval_nightly"


def _shard_spans(stack, name: str, slots: int) -> list[tuple[datetime, datetime]]:
    table = stack.lakehouse / name
    write_deltalake(str(table), blob_rows(0, 300))
    stack.api("PATCH", f"pools/{GPU_POOL}", {"pool": GPU_POOL, "slots": slots, "include_deferred": False})
    conf = {"table": str(table), "key": "row_id", "label": "label", "features": "f0,f1,f2", "engine": "delta-rs",
            "n_clusters": 4, "shards": 3}  # fmt: skip
    run_id = stack.trigger(DAG, conf)
    assert stack.wait_run(DAG, run_id) == "success", stack.states(DAG, run_id)
    shards = [ti for ti in stack.task_instances(DAG, run_id) if ti["task_id"] == "train_shard"]
    assert sorted(ti["map_index"] for ti in shards) == [0, 1, 2]
    return sorted((datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])) for ti in shards)


def test_one_slot_runs_the_shards_one_after_another_and_three_let_them_overlap(stack) -> None:
    serial = _shard_spans(stack, "pool_one_slot", slots=1)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(serial)), serial

    parallel = _shard_spans(stack, "pool_three_slots", slots=3)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(parallel)), parallel
