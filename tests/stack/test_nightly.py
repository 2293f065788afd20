"""``ecoval_nightly`` on the running stack: triggered through the REST API, valued on the Spark
standalone cluster, tracked on the Postgres-backed MLflow server (issue 14, tests 1 and defect b)."""

from __future__ import annotations

import time

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import blob_rows, uuid_keyed
from tests.stack.services import spark_connect_server

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

DAG = "ecoval_nightly"
COLUMNS = {"key": "row_id", "label": "label", "features": "f0,f1,f2"}


def _parent_run(stack, run_id: str) -> str:
    xcom = stack.api("GET", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/decide/xcomEntries/return_value")
    return str(xcom["value"]["run_id"])


def test_an_unattended_run_without_table_settings_is_skipped_with_one_line(stack) -> None:
    # Unpaused at creation, the DAG fired its latest cron slot at once, with no conf (the fixture
    # waited for it to end); the stack names no key or label anywhere (defect b).
    runs = stack.api("GET", f"dags/{DAG}/dagRuns?run_type=scheduled")["dag_runs"]
    assert len(runs) == 1
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["state"] == "success"
    states = stack.states(DAG, run_id)
    assert states["detect"] == "skipped"
    assert states["mark_failed"] == "skipped"
    assert "skipped: no table settings (key, label not set)" in stack.log(DAG, run_id, "detect")


def test_a_run_triggered_through_the_api_values_every_row_on_the_spark_cluster(stack) -> None:
    # The table is in the stack's bucket (issue 25): the tasks reach it with the AWS variables of
    # the scheduler's environment, the executors through Hadoop's s3a connector; keyed by UUIDs.
    table = "s3://lake/events_spark"
    write_deltalake(table, uuid_keyed(blob_rows(0, 300)), storage_options=stack.s3.env())
    # Each Spark task is sized by the run's settings (defect c): one core and 512 MB executors.
    conf = {"table": table, "engine": "spark", "spark_cores": 1, "spark_executor_memory": "512m"}
    run_id = stack.trigger(DAG, {**conf, "n_clusters": 3, "shards": 2, **COLUMNS})
    # Eleven tasks, each Spark one starting its own application on the standalone master (about
    # 30 s each; the next test attaches them to a shared Spark instead), each with Hadoop's s3a
    # connector and the AWS SDK bundle (650 MB) shipped to its executor: the run took 382-450 s
    # here before issue 26 and 669-712 s since (not yet explained).
    assert stack.wait_run(DAG, run_id, timeout=900) == "success", stack.failures(DAG, run_id)

    values = DeltaTable(table, storage_options=stack.s3.env()).to_pyarrow_table(columns=["row_id", "ecoval_value"])
    assert values.num_rows == 300
    assert values.column("ecoval_value").null_count == 0
    assert pc.count_distinct(values.column("row_id")).as_py() == 300
    # The run's workspace lay beside the table in the bucket; only the embeddings stay.
    workspace = stack.s3.root / "lake" / "_ecoval" / "events_spark"
    beside = {p.relative_to(workspace).parts[0] for p in workspace.rglob("*") if p.is_file()}
    assert len(beside) == 1 and beside.pop().startswith("embeddings_"), beside

    client = stack.mlflow()
    parent = client.get_run(_parent_run(stack, run_id))
    assert parent.info.status == "FINISHED"
    assert parent.data.params["engine"] == "spark"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["ecoval.shard"] for c in children) == ["shard-0", "shard-1"]
    version = client.get_model_version_by_alias("ecoval_events_spark", "current")
    assert version.run_id == parent.info.run_id
    # The embed, propagate and write tasks each ran an application on the standalone master.
    apps = [app for app in stack.spark_applications() if app["name"] == "ecoval"]
    assert len(apps) >= 3
    assert {app["cores"] for app in apps} == {1}
    assert {app.get("memoryperexecutor", app.get("memoryperslave")) for app in apps} == {512}


@pytest.fixture
def connect_server(stack):
    with spark_connect_server(stack) as url:
        yield url


def test_a_run_attached_to_the_stacks_spark_connect_server_starts_no_application(stack, connect_server) -> None:
    table = "s3://lake/events_connect"
    write_deltalake(table, uuid_keyed(blob_rows(0, 300)), storage_options=stack.s3.env())
    before = [app["id"] for app in stack.spark_applications() if app["name"] == "ecoval"]
    conf = {"table": table, "engine": "spark", "spark_conn_id": "spark_connect_default"}
    started = time.monotonic()
    run_id = stack.trigger(DAG, {**conf, "n_clusters": 3, "shards": 2, **COLUMNS})
    assert stack.wait_run(DAG, run_id, timeout=600) == "success", stack.failures(DAG, run_id)
    print(f"\nthe DAG run attached to Spark Connect took {time.monotonic() - started:.0f} s")

    values = DeltaTable(table, storage_options=stack.s3.env()).to_pyarrow_table(columns=["row_id", "ecoval_value"])
    assert values.num_rows == 300 and values.column("ecoval_value").null_count == 0
    # Every Spark step ran on the one server's application; no task started its own.
    apps = stack.spark_applications()
    assert [app["id"] for app in apps if app["name"] == "ecoval"] == before
    assert [app["state"] for app in apps if app["name"] == "ecoval-spark-connect"] == ["RUNNING"]
    parent = stack.mlflow().get_run(_parent_run(stack, run_id))
    assert parent.data.params["spark_conn_id"] == "spark_connect_default"
