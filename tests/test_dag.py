"""The `ecoval_nightly` DAG: integrity, and real DAG runs (dag.test and `airflow dags test`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from airflow.sdk import AssetAlias
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.config import OUTPUT_SETTINGS, load_config, settings
from ecoval_ops.pipeline.catalog import values_uri
from tests.conftest import blob_rows, uuid_keyed

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

DAGS = Path(__file__).resolve().parents[1] / "dags"
AIRFLOW = Path(sys.executable).with_name("airflow")


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("ecoval_nightly")


def _has_cycle(dag) -> bool:
    state: dict[str, int] = {}

    def visit(task_id: str) -> bool:
        if state.get(task_id) == 1:
            return True
        if state.get(task_id) == 2:
            return False
        state[task_id] = 1
        if any(visit(d) for d in dag.get_task(task_id).downstream_task_ids):
            return True
        state[task_id] = 2
        return False

    return any(visit(t) for t in dag.task_ids)


def test_dag_integrity(dag) -> None:
    assert not _has_cycle(dag)
    assert set(dag.task_ids) == {
        "detect", "embed", "decide", "branch", "cluster", "train_shard", "fit_model",
        "propagate", "write", "report", "nothing_to_do", "mark_failed", "done",
    }  # fmt: skip
    for task in dag.tasks:
        assert task.owner == "ecoval"
        assert task.retries == (0 if task.task_id == "mark_failed" else 2)
    assert dag.get_task("train_shard").pool == "ecoval_gpu"
    # Only the shards go to the GPU workers' queue.
    assert {t.task_id for t in dag.tasks if t.queue == "gpu"} == {"train_shard"}
    # The params are RunConfig's fields (minus the terminal's output switches), empty by default.
    assert list(dag.params.keys()) == [s.name for s in settings() if s.name not in OUTPUT_SETTINGS]
    assert {"learner", "device", "k_neighbors", "c_kappa", "image_col", "embedder", "weights"} <= set(dag.params)
    assert all(dag.params[name] is None for name in dag.params)
    assert dag.get_task("propagate").trigger_rule == "none_failed_min_one_success"
    # The DAG waits on the source table's asset, named by its URI (what a producer declares);
    # the MERGE publishes the values asset of the table it valued, through an alias.
    (source,) = dag.timetable.asset_condition.objects
    (values,) = dag.get_task("write").outlets
    assert source.uri.startswith("file://") and source.name == source.uri
    assert isinstance(values, AssetAlias) and values.name == "ecoval_values__ecoval_nightly"
    assert not dag.catchup and dag.max_active_runs == 1


def test_the_gpu_pool_is_created_by_the_stack() -> None:
    init = (DAGS.parent / "docker" / "airflow-init.sh").read_text()
    assert "airflow pools set ecoval_gpu" in init


def _conf(table: Path, tmp_path: Path, engine: str) -> dict[str, object]:
    return {
        "table": str(table),
        "key": "row_id",
        "label": "label",
        "features": "f0,f1,f2",
        "n_clusters": 3,
        "shards": 2,
        "engine": engine,
        "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


@pytest.mark.spark
@pytest.mark.mlflow
@pytest.mark.delta
@pytest.mark.slow
def test_dag_runs_end_to_end_with_spark(dag, spark, tmp_path) -> None:
    from mlflow import MlflowClient

    table = tmp_path / "lake" / "train"
    # Keyed by UUID strings, as most tables are: the keys cross XCom, the workspace, the Spark
    # plan and MLflow's artifacts, and must come back equal and of the key column's Arrow type.
    rows = uuid_keyed(blob_rows(0, 300))
    write_deltalake(str(table), rows)
    conf = _conf(table, tmp_path, "spark")
    first = dag.test(run_conf=conf)
    assert first.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in first.get_task_instances()}
    assert states[("train_shard", 0)] == states[("train_shard", 1)] == "success"
    assert states[("nothing_to_do", -1)] == "skipped"
    values = DeltaTable(str(table)).to_pyarrow_table()
    assert values.num_rows == 300 and values.column("ecoval_value").null_count == 0
    assert values.schema.field("row_id").type == pa.string()
    assert sorted(values.column("row_id").to_pylist()) == sorted(rows.column("row_id").to_pylist())
    import mlflow

    mlflow.set_tracking_uri(conf["mlflow_uri"])
    members = mlflow.pyfunc.load_model("models:/ecoval_train@current").unwrap_python_model().member_keys
    assert members.type == pa.string() and len(members) == pc.count_distinct(members).as_py() > 0
    assert pc.all(pc.is_in(members, value_set=rows.column("row_id"))).as_py()
    version = DeltaTable(str(table)).version()
    # Lineage: the values asset of the table the run valued (its conf), not the environment's table.
    events = _asset_events()
    assert values_uri(table) in events and values_uri("/lakehouse/train") not in events

    client = MlflowClient(tracking_uri=conf["mlflow_uri"], registry_uri=conf["mlflow_uri"])
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("ecoval").experiment_id], filter_string="tags.`ecoval.mode` = 'refit'"
    )
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["shard-0", "shard-1"]
    assert str(client.get_model_version_by_alias("ecoval_train", "current").version) == "1"

    second = dag.test(run_conf=conf)
    assert second.state == "success"
    assert {ti.task_id: ti.state for ti in second.get_task_instances()}["nothing_to_do"] == "success"
    assert DeltaTable(str(table)).version() == version


@pytest.mark.mlflow
@pytest.mark.delta
@pytest.mark.slow
def test_airflow_dags_test_command_reports_lineage_with_quality_facets(airflow_db, tmp_path) -> None:
    """`airflow dags test` with OpenLineage's file transport: write and report name the tables, report with facets."""
    table = tmp_path / "lake" / "train"
    write_deltalake(str(table), uuid_keyed(blob_rows(0, 200)))
    conf = json.dumps(_conf(table, tmp_path, "delta-rs"))
    events = tmp_path / "lineage.jsonl"
    transport = json.dumps({"type": "file", "log_file_path": str(events), "append": True})
    out = subprocess.run(
        [str(AIRFLOW), "dags", "test", "ecoval_nightly", "--conf", conf],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__OPENLINEAGE__TRANSPORT": transport},
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    written = DeltaTable(str(table))
    assert written.to_pyarrow_table().column("ecoval_value").null_count == 0

    complete = {
        e["job"]["name"].rsplit(".", 1)[-1]: e
        for e in map(json.loads, events.read_text().splitlines())
        if e["eventType"] == "COMPLETE"
    }
    assert {"detect", "decide", "write", "report"} <= set(complete)
    for task in ("write", "report"):
        (source,), (target,) = complete[task]["inputs"], complete[task]["outputs"]
        assert (source["namespace"], source["name"]) == ("file", str(table.resolve()))
        assert source["facets"]["version"]["datasetVersion"] == "0"
        # Values written in place: the output is the source table at the version the MERGE committed.
        assert (target["namespace"], target["name"]) == ("file", str(table.resolve()))
        assert target["facets"]["version"]["datasetVersion"] == str(written.version())
    facets = complete["report"]["inputs"][0]["inputFacets"]
    values = written.to_pyarrow_table(columns=["ecoval_suspect", "ecoval_percentile"])
    metrics = facets["dataQualityMetrics"]
    assert metrics["rowCount"] == 200
    suspect, percentile = metrics["columnMetrics"]["ecoval_suspect"], metrics["columnMetrics"]["ecoval_percentile"]
    assert suspect["count"] == percentile["count"] == 200
    assert suspect["sum"] == pytest.approx(pc.sum(values.column("ecoval_suspect").cast("int64")).as_py())
    assert percentile["sum"] == pytest.approx(pc.sum(values.column("ecoval_percentile")).as_py())
    rules = {a["column"]: a for a in facets["dataQualityAssertions"]["assertions"]}
    assert set(rules) == {"ecoval_suspect", "ecoval_cluster"}
    assert rules["ecoval_cluster"]["assertion"].startswith("night_cluster_drift <= ")
    assert all(a["success"] is True and a["severity"] == "warn" for a in rules.values())
    assert complete["report"]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 200
    assert not complete["detect"]["inputs"], "only write and report declare tables"


@pytest.mark.mlflow
@pytest.mark.delta
@pytest.mark.slow
def test_a_run_keeps_the_settings_pinned_at_detect(dag, tmp_path, monkeypatch) -> None:
    from airflow.models import Variable
    from airflow.sdk import Variable as TaskVariable
    from mlflow import MlflowClient

    from ecoval_ops.pipeline import fitting
    from ecoval_ops.pipeline.tasks import resolved_settings

    table = tmp_path / "lake" / "train"
    write_deltalake(str(table), blob_rows(0, 300))
    conf = _conf(table, tmp_path, "delta-rs")
    del conf["n_clusters"]
    Variable.set("ecoval_budget", "20")
    Variable.set("ecoval_k_neighbors", "7")
    monkeypatch.setenv("ECOVAL_SEED", "3")
    changed = []
    cluster = fitting.cluster

    def cluster_then_change_the_settings(ref, engine):
        # Between decide and train_shard, a person edits the Variables and the environment.
        TaskVariable.set("ecoval_budget", "200")
        TaskVariable.set("ecoval_k_neighbors", "2")
        os.environ["ECOVAL_SEED"] = "8"
        resolved_now = load_config(None, **resolved_settings(conf))
        assert (resolved_now.method.budget, resolved_now.method.k_neighbors, resolved_now.method.seed) == (200, 2, 8)
        changed.append(ref.run.config)
        return cluster(ref, engine)

    monkeypatch.setattr(fitting, "cluster", cluster_then_change_the_settings)
    try:
        run = dag.test(run_conf=conf)
    finally:
        Variable.delete("ecoval_budget")
        Variable.delete("ecoval_k_neighbors")
    assert run.state == "success" and len(changed) == 1
    assert (changed[0].method.budget, changed[0].method.k_neighbors, changed[0].method.seed) == (20, 7, 3)
    client = MlflowClient(tracking_uri=conf["mlflow_uri"], registry_uri=conf["mlflow_uri"])
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("ecoval").experiment_id], "tags.`ecoval.mode` = 'refit'"
    )
    assert (parent.data.params["budget"], parent.data.params["k_neighbors"], parent.data.params["seed"]) == (
        "20",
        "7",
        "3",
    )
    # Budget 20 allows p = 5 (2 + 5 + 10 trainings); the changed Variable (200) would allow p = 19.
    assert parent.data.metrics["p"] <= 5 and parent.data.metrics["trainings"] <= 20
    version = client.get_model_version_by_alias("ecoval_train", "current")
    model = client.get_run(version.run_id).data.params
    assert (model["budget"], model["k_neighbors"]) == ("20", "7")


@pytest.mark.mlflow
@pytest.mark.delta
def test_a_run_on_an_s3_table_takes_its_secret_from_a_variable_and_keeps_it_out_of_xcom(
    dag, s3, tmp_path, monkeypatch, caplog
) -> None:
    # The secret key is only in the Variable ecoval_storage_options: detect pins the settings
    # without it, and every later task takes it again from the Variable (XCom carries none).
    import logging

    from airflow.models import Variable
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from tests.s3 import SECRET

    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    table = f"{s3.bucket('dag-run')}/train"
    write_deltalake(table, uuid_keyed(blob_rows(0, 300)), storage_options=s3.env())
    conf = _conf(table, tmp_path, "delta-rs")
    Variable.set("ecoval_storage_options", json.dumps({"AWS_SECRET_ACCESS_KEY": SECRET}))
    caplog.set_level(logging.DEBUG)
    try:
        run = dag.test(run_conf=conf)
    finally:
        Variable.delete("ecoval_storage_options")
    assert run.state == "success"
    values = DeltaTable(table, storage_options=s3.env()).to_pyarrow_table(columns=["row_id", "ecoval_value"])
    assert values.num_rows == 300 and values.column("ecoval_value").null_count == 0
    with create_session() as session:
        xcoms = [str(x.value) for x in session.query(XComModel).filter(XComModel.run_id == run.run_id)]
    assert any("s3://dag-run/train" in x for x in xcoms) and not any(SECRET in x for x in xcoms)
    assert SECRET not in caplog.text
    # The workspace lay beside the table in the bucket (its embeddings stay, the run's parts went).
    workspace = s3.root / "dag-run" / "_ecoval" / "train"
    beside = {p.relative_to(workspace).parts[0] for p in workspace.rglob("*") if p.is_file()}
    assert len(beside) == 1 and beside.pop().startswith("embeddings_")
    for where in (tmp_path, s3.root / "dag-run"):
        assert [p for p in where.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []


def _asset_events() -> list[str]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = session.query(AssetModel.uri).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
        return [uri for (uri,) in query.order_by(AssetEvent.id)]


TABLES = """
- name: fraud
  table: {lake}/a/train
  key: row_id
  label: label
  features: f0,f1,f2
  n_clusters: 3
  engine: delta-rs
  mlflow_uri: sqlite:///{lake}/mlflow.db
  schedule: "0 3 * * *"
- name: wines
  table: {lake}/b/train
  key: row_id
  label: label
  features: f0,f1,f2
- name: typo
  table: {lake}/c/train
  lable: label
- name: fraud
  table: {lake}/d/train
- name: bad name
  table: {lake}/e/train
"""


def _bag(monkeypatch, tables: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("ECOVAL_TABLES", str(tables))
    return DagBag(dag_folder=str(DAGS))


def test_one_dag_per_table_and_bad_entries_reported_by_name(airflow_db, tmp_path, monkeypatch) -> None:
    from ecoval_ops.pipeline.catalog import source_uri

    tables = tmp_path / "tables.yaml"
    tables.write_text(TABLES.format(lake=tmp_path))
    bag = _bag(monkeypatch, tables)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {f"ecoval_nightly__{n}" for n in ("fraud", "wines", "typo", "entry_3", "entry_4")}
    fraud, wines = bag.get_dag("ecoval_nightly__fraud"), bag.get_dag("ecoval_nightly__wines")
    # Two tables of the same folder name: their assets come from their own entries and differ.
    (a,) = fraud.timetable.asset_condition.objects
    (b,) = wines.timetable.asset_condition.objects
    assert (a.uri, b.uri) == (source_uri(tmp_path / "a" / "train"), source_uri(tmp_path / "b" / "train"))
    assert fraud.get_task("write").outlets != wines.get_task("write").outlets
    assert fraud.params["n_clusters"] == 3 and fraud.params["table"] == f"{tmp_path}/a/train"
    assert wines.params["n_clusters"] is None
    assert (fraud.timetable.timetable.expression, wines.timetable.timetable.expression) == ("0 3 * * *", "0 2 * * *")
    reasons = {
        "typo": "unknown settings ['lable']",
        "entry_3": "the name 'fraud' is used by an earlier entry",
        "entry_4": "table name 'bad name' is not a plain identifier",
    }
    for name, reason in reasons.items():
        bad = bag.get_dag(f"ecoval_nightly__{name}")
        assert bad.task_ids == ["invalid_entry"] and reason in bad.doc_md and not bad.timetable.can_be_scheduled
    run = bag.get_dag("ecoval_nightly__typo").test()
    assert run.state == "failed"


def test_an_unreadable_tables_file_is_one_import_error_naming_it(airflow_db, tmp_path, monkeypatch) -> None:
    tables = tmp_path / "tables.yaml"
    tables.write_text("name: [unclosed")
    bag = _bag(monkeypatch, tables)
    (error,) = bag.import_errors.values()
    assert f"ECOVAL_TABLES file {tables} cannot be read" in error and not bag.dag_ids
    tables.write_text("name: fraud\n")
    (error,) = _bag(monkeypatch, tables).import_errors.values()
    assert "must be a list of tables; found dict" in error


@pytest.mark.mlflow
@pytest.mark.delta
@pytest.mark.slow
def test_a_table_dag_runs_and_publishes_its_own_values_asset(airflow_db, tmp_path, monkeypatch) -> None:
    tables = tmp_path / "tables.yaml"
    tables.write_text(TABLES.format(lake=tmp_path))
    for folder in ("a", "b"):
        write_deltalake(str(tmp_path / folder / "train"), blob_rows(0, 200))
    run = _bag(monkeypatch, tables).get_dag("ecoval_nightly__fraud").test()
    assert run.state == "success"
    assert DeltaTable(str(tmp_path / "a" / "train")).to_pyarrow_table().column("ecoval_value").null_count == 0
    # Another table in the conf is refused at once (bad input is not retried): this DAG's assets
    # and lineage are its own table's.
    refused = (
        _bag(monkeypatch, tables)
        .get_dag("ecoval_nightly__fraud")
        .test(run_conf={"table": str(tmp_path / "b" / "train")})
    )
    assert refused.state == "failed"
    (detect,) = [ti for ti in refused.get_task_instances() if ti.task_id == "detect"]
    assert detect.state == "failed" and detect.try_number == 1
    assert DeltaTable(str(tmp_path / "b" / "train")).version() == 0
    uris = _asset_events()
    assert values_uri(tmp_path / "a" / "train") in uris and values_uri(tmp_path / "b" / "train") not in uris


@pytest.mark.mlflow
@pytest.mark.delta
@pytest.mark.slow
def test_an_alert_calls_the_tables_notifiers(airflow_db, tmp_path, monkeypatch) -> None:
    from tests.conftest import flipped_rows

    calls = tmp_path / "calls.jsonl"
    table = tmp_path / "lake" / "train"
    write_deltalake(str(table), blob_rows(0, 300))
    tables = tmp_path / "tables.yaml"
    tables.write_text(
        f"""
- name: watched
  table: {table}
  key: row_id
  label: label
  features: f0,f1,f2
  n_clusters: 3
  engine: delta-rs
  mlflow_uri: sqlite:///{tmp_path}/mlflow.db
  notifiers:
    - class: tests.notifiers.RecordingNotifier
      path: {calls}
      text: "ecoval alert: {{{{ ecoval_alert }}}}"
"""
    )
    assert _bag(monkeypatch, tables).get_dag("ecoval_nightly__watched").test().state == "success"
    assert not calls.exists()
    write_deltalake(str(table), flipped_rows(300, 340), mode="append", schema_mode="merge")
    assert _bag(monkeypatch, tables).get_dag("ecoval_nightly__watched").test().state == "success"
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert call["dag_id"] == "ecoval_nightly__watched"
    assert call["text"].startswith("ecoval alert: ") and "of the 40 new rows are suspect" in call["text"]


@pytest.mark.mlflow
@pytest.mark.delta
@pytest.mark.slow
def test_a_failed_shard_fails_the_run_and_closes_the_parent_after_it(dag, tmp_path, monkeypatch) -> None:
    from mlflow import MlflowClient

    from ecoval_ops.exceptions import InvalidInputError
    from ecoval_ops.pipeline import fitting

    table = tmp_path / "lake" / "train"
    write_deltalake(str(table), blob_rows(0, 300))
    conf = _conf(table, tmp_path, "delta-rs")
    train_shard = fitting.train_shard

    def second_shard_breaks(ref, index):
        if index == 1:
            raise InvalidInputError("shard 1 broke")
        return train_shard(ref, index)

    monkeypatch.setattr(fitting, "train_shard", second_shard_breaks)
    run = dag.test(run_conf=conf)
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("train_shard", 0)] == "success" and states[("train_shard", 1)] == "failed"
    assert states[("mark_failed", -1)] == "failed" and states[("fit_model", -1)] == "upstream_failed"
    client = MlflowClient(tracking_uri=conf["mlflow_uri"])
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("ecoval").experiment_id], "tags.`ecoval.mode` = 'refit'"
    )
    assert parent.info.status == "FAILED"
    assert "ecoval_value" not in DeltaTable(str(table)).schema().to_arrow().names
