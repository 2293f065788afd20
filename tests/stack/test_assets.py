"""Asset scheduling on the real scheduler (issue 14, test 3): rows a producer appends start
``ecoval_nightly`` by themselves; the valuation's own MERGE starts nothing."""

from __future__ import annotations

import time

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from tests.conftest import blob_rows

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

DAG = "ecoval_nightly"
SETTINGS = {"key": "row_id", "label": "label", "features": "f0,f1,f2", "engine": "delta-rs", "n_clusters": "3"}


def _asset_runs(stack) -> list[dict]:
    return list(stack.api("GET", f"dags/{DAG}/dagRuns?run_type=asset_triggered&order_by=run_after")["dag_runs"])


def _produce(stack, tmp_path, start: int, stop: int) -> dict:
    rows = tmp_path / f"rows_{start}_{stop}.parquet"
    pq.write_table(blob_rows(start, stop), rows)
    before = len(_asset_runs(stack))
    producer = stack.trigger("ecoval_producer", {"rows": str(rows)})
    assert stack.wait_run("ecoval_producer", producer) == "success"
    deadline = time.monotonic() + 60
    while len(runs := _asset_runs(stack)) == before:
        assert time.monotonic() < deadline, "the producer's asset event started no ecoval_nightly run"
        time.sleep(0.5)
    run = runs[-1]
    assert stack.wait_run(DAG, run["dag_run_id"]) == "success", stack.states(DAG, run["dag_run_id"])
    return run


def test_new_rows_start_the_dag_and_are_valued_out_of_sample_and_its_merge_starts_nothing(stack, tmp_path) -> None:
    # An asset-triggered run has no conf: the deployment names the table's settings as Variables
    # (the table itself is ECOVAL_TABLE, the path the DAG's source asset is for).
    for name, value in SETTINGS.items():
        stack.api("POST", "variables", {"key": f"ecoval_{name}", "value": value})
    try:
        _produce(stack, tmp_path, 0, 300)
        table = DeltaTable(str(stack.lakehouse / "train"))
        assert table.to_pyarrow_table(columns=["ecoval_value"]).column(0).null_count == 0

        second = _produce(stack, tmp_path, 300, 325)
        values = DeltaTable(str(stack.lakehouse / "train")).to_pyarrow_table(
            columns=["row_id", "ecoval_value", "ecoval_mode"]
        )
        assert values.num_rows == 325
        assert values.column("ecoval_value").null_count == 0
        new = values.filter(pc.greater_equal(values.column("row_id"), 300))
        assert set(new.column("ecoval_mode").to_pylist()) == {"out_of_sample"}

        # The write task published the values asset, not the source asset: no run follows.
        time.sleep(15)
        assert _asset_runs(stack)[-1]["dag_run_id"] == second["dag_run_id"]
        assert len(_asset_runs(stack)) == 2
    finally:
        for name in SETTINGS:
            stack.api("DELETE", f"variables/ecoval_{name}")
