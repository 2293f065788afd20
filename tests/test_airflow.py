"""The valuation task group in a team's own DAG (ingest -> valuation -> train), run with dag.test."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from ecoval_ops.pipeline.catalog import values_uri

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.mlflow, pytest.mark.delta]


TEAM_DAG = """
import json
from datetime import datetime

from airflow.sdk import DAG, task
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.airflow import valuation_group
from tests.conftest import blob_rows, uuid_keyed

with DAG("team_training", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task
    def ingest() -> None:
        write_deltalake({table!r}, uuid_keyed(blob_rows(0, 240)))

    @task
    def train() -> None:
        # The training task reads the rows with the value columns the group wrote.
        rows = DeltaTable({table!r}).to_pyarrow_table(columns=["row_id", "ecoval_value", "ecoval_suspect"])
        with open({seen!r}, "w") as out:
            json.dump({{"rows": rows.num_rows, "nulls": rows.column("ecoval_value").null_count}}, out)

    group = valuation_group(
        table={table!r}, key={key!r}, label="label", features="f0,f1,f2", n_clusters=3, shards=2,
        engine="delta-rs", mlflow_uri={mlflow!r},
    )
    ingest() >> group >> train()
"""
"""A team's DAG file: its ingest writes the table, the group values it, its training reads the values."""


def _team_dag(table: Path, tmp_path: Path, monkeypatch, key: str = "row_id"):
    from airflow.dag_processing.dagbag import DagBag

    seen, folder = tmp_path / "train_saw.json", tmp_path / "dags"
    folder.mkdir()
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (folder / "team.py").write_text(TEAM_DAG.format(table=str(table), key=key, seen=str(seen), mlflow=mlflow))
    # dag.test runs a DAG of a configured bundle: the team's folder is one, beside the DAG folder.
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": f"team-{tmp_path.name}", "classpath": local, "kwargs": {"path": str(folder)}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.get_dag("team_training"), seen


@pytest.mark.slow
def test_the_task_group_runs_between_a_teams_ingest_and_training(airflow_db, tmp_path, monkeypatch) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from ecoval_ops.pipeline.flow import STEPS

    table = tmp_path / "lake" / "train"
    dag, seen = _team_dag(table, tmp_path, monkeypatch)
    steps = {f"ecoval.{s.name}" for s in STEPS}
    extra = {"ingest", "train", "ecoval.branch", "ecoval.nothing_to_do", "ecoval.mark_failed", "ecoval.done"}
    assert steps | extra == set(dag.task_ids)
    assert dag.get_task("ecoval.detect").upstream_task_ids == {"ingest"}
    assert dag.get_task("train").upstream_task_ids == {"ecoval.done"}
    assert dag.get_task("ecoval.train_shard").pool == "ecoval_gpu"
    run = dag.test()
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("ecoval.train_shard", 0)] == states[("ecoval.train_shard", 1)] == "success"
    assert states[("ecoval.nothing_to_do", -1)] == "skipped" and states[("ecoval.mark_failed", -1)] == "skipped"
    assert states[("ecoval.done", -1)] == states[("train", -1)] == "success"
    assert json.loads(seen.read_text()) == {"rows": 240, "nulls": 0}
    with create_session() as session:
        uris = [u for (u,) in session.query(AssetModel.uri).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)]
    assert values_uri(table) in uris


def test_a_failed_valuation_stops_the_teams_training(airflow_db, tmp_path, monkeypatch) -> None:
    table = tmp_path / "lake" / "train"
    dag, seen = _team_dag(table, tmp_path, monkeypatch, key="no_such_column")
    run = dag.test()
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["ecoval.detect"] == "failed" and states["train"] == "upstream_failed" and not seen.exists()
    assert "ecoval_value" not in DeltaTable(str(table)).schema().to_arrow().names


def test_the_group_needs_a_table_or_an_alias() -> None:
    from airflow.sdk import DAG

    from ecoval_ops.airflow import valuation_group

    with DAG("no_table", schedule=None, start_date=datetime(2026, 1, 1)), pytest.raises(ValueError, match="table"):
        valuation_group(key="id", label="y")
