"""``make docker-test``: the project image built and the compose stack run end to end (issue 17).

On a machine without images or a registry: the Docker engine installed and started where needed,
a bookworm base made with debootstrap, stand-ins for the postgres and redis images, the project
image built from ``docker/Dockerfile``; then ``docker/docker-compose.yml`` up, ``ecoval_nightly``
triggered through the API server on a small Delta table in the stack's S3 bucket (s3proxy), every
row valued, the runs on the MLflow server (its artifacts in the bucket too), the S3 secret in no
XCom and no task log, the LCO shards run by the GPU queue's worker and by no
other; then everything torn down (containers, network, volumes, and the engine's iptables chains,
bridge and forwarding flag where this test started it). The images stay, as a cache for the next
run. Stage timings, the image size and the stack's memory go to ``test-artifacts/docker-test.json``.

Not part of ``make test`` (about 15 minutes from nothing, 5 with the images built).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pyarrow.compute as pc
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from tests.conftest import blob_rows, uuid_keyed
from tests.docker.engine import DOCKER_DIR, base_image, docker_engine, local_service_images, missing_tools, run
from tests.stack.client import ADMIN_PASSWORD, StackClient
from tests.stack.services import free_port

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

ROOT = DOCKER_DIR.parent
PROJECT = "ecoval-docker-test"
IMAGE = "ecoval:docker-test"
DAG = "ecoval_nightly"
ROWS = 300
ARTIFACTS = ROOT / "test-artifacts"
CELERY_WORKERS = ("airflow-worker", "airflow-worker-gpu")


@dataclass
class ComposeStack:
    """The running compose project: its client, its files and what the run measured."""

    client: StackClient
    compose: list[str]
    timings_s: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    s3: dict[str, str] = field(default_factory=dict)

    @property
    def lakehouse(self) -> Path:
        """Where the ``lakehouse`` volume lies on this machine."""
        volume = f"{PROJECT}_lakehouse"
        return Path(run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume]).stdout.strip())

    def container_hostname(self, service: str) -> str:
        container = run([*self.compose, "ps", "-q", service]).stdout.strip()
        return run(["docker", "inspect", "-f", "{{.Config.Hostname}}", container]).stdout.strip()

    def logs(self) -> str:
        return run([*self.compose, "logs", "--no-color", "--tail", "150"], check=False, timeout=120).stdout


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and run(["nvidia-smi", "-L"], check=False).returncode == 0


def _compose_file(home: Path) -> Path:
    """The shipped compose file; where this machine has no GPU, a copy whose GPU worker reserves
    none (Docker refuses to start a container whose device request no driver can meet), which
    is the only difference."""
    shipped = DOCKER_DIR / "docker-compose.yml"
    if _has_gpu():
        return shipped
    compose = yaml.safe_load(shipped.read_text())
    del compose["services"]["airflow-worker-gpu"]["deploy"]
    copy = home / "docker-compose.no-gpu.yml"
    copy.write_text(yaml.safe_dump(compose, sort_keys=False))
    return copy


def _wait(what: str, ready: Callable[[], bool], stack: ComposeStack, timeout: float) -> float:
    start = time.monotonic()
    while True:
        try:
            if ready():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what} not ready in {timeout:.0f} s; the services' logs:\n{stack.logs()[-6000:]}")
        time.sleep(2)


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return dict(json.load(r))


def _healthy(stack: ComposeStack) -> None:
    client = stack.client

    def airflow() -> bool:
        health = _json(f"{client.airflow_url}/api/v2/monitor/health")
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all(health.get(part, {}).get("status") == "healthy" for part in parts)

    stack.timings_s["airflow_healthy"] = _wait("airflow", airflow, stack, 600)
    stack.timings_s["dag_parsed"] = _wait(
        "the DAG", lambda: DAG in {d["dag_id"] for d in client.api("GET", "dags")["dags"]}, stack, 300
    )
    _wait("mlflow", lambda: urllib.request.urlopen(f"{client.mlflow_uri}/health", timeout=5).status == 200, stack, 300)
    _wait("the spark worker", lambda: int(_json(f"{client.spark_ui}/json/")["aliveworkers"]) >= 1, stack, 300)
    _wait("the spark connect server", lambda: _connect_app(client) is not None, stack, 300)

    def celery_workers() -> bool:
        logs = (run([*stack.compose, "logs", "--no-color", worker]).stdout for worker in CELERY_WORKERS)
        return all(" ready." in text for text in logs)

    stack.timings_s["celery_workers"] = _wait("the celery workers", celery_workers, stack, 300)


def _memory_mb(compose: list[str]) -> float:
    ids = run([*compose, "ps", "-q"]).stdout.split()
    usage = run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", *ids], timeout=120).stdout
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 2**20}
    total = 0.0
    for line in usage.splitlines():
        used = line.split("/")[0].strip()
        for unit, scale in units.items():
            if used.endswith(unit):
                total += float(used[: -len(unit)]) * scale
                break
    return total


@contextmanager
def compose_stack(home: Path) -> Iterator[ComposeStack]:
    """Engine, images and the compose stack up and healthy, for the block; all down after it."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    with docker_engine(home):
        timings["engine"] = time.monotonic() - started
        mark = time.monotonic()
        base = base_image(home)
        timings["base_image"] = time.monotonic() - mark
        mark = time.monotonic()
        services = local_service_images(base)
        timings["service_images"] = time.monotonic() - mark
        # The host's extra CAs (a TLS-intercepting proxy to PyPI and Maven Central) go into the build.
        copied = [
            Path(shutil.copy(certificate, DOCKER_DIR / "ca-certificates"))
            for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt")
            if not (DOCKER_DIR / "ca-certificates" / certificate.name).exists()
        ]
        mark = time.monotonic()
        try:
            run(["docker", "build", "-f", str(DOCKER_DIR / "Dockerfile"), "--build-arg", f"BASE_IMAGE={base}",
                 "-t", IMAGE, str(ROOT)], timeout=3600)  # fmt: skip
        finally:
            for certificate in copied:
                certificate.unlink()
        timings["project_image"] = time.monotonic() - mark
        size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE]).stdout)
        names = ("AIRFLOW_PORT", "MLFLOW_PORT", "SPARK_UI_PORT", "SPARK_MASTER_PORT", "S3_PORT", "SPARK_CONNECT_PORT")
        ports = {name: free_port() for name in names}
        s3_secret = secrets.token_hex(12)
        env = {
            **services,
            **{name: str(port) for name, port in ports.items()},
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "ECOVAL_IMAGE": IMAGE,
            "BASE_IMAGE": base,
            "AIRFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "AIRFLOW_JWT_SECRET": secrets.token_hex(16),
            "POSTGRES_PASSWORD": secrets.token_hex(8),
            "SPARK_WORKER_MEMORY": "2g",
            "S3_ACCESS_KEY": "ecoval-docker-test",
            "S3_SECRET_KEY": s3_secret,
        }
        compose = ["env", *(f"{k}={v}" for k, v in env.items()), "docker-compose", "-p", PROJECT,
                   "-f", str(_compose_file(home)), "--project-directory", str(DOCKER_DIR)]  # fmt: skip
        client = StackClient(
            airflow_url=f"http://127.0.0.1:{ports['AIRFLOW_PORT']}",
            mlflow_uri=f"http://127.0.0.1:{ports['MLFLOW_PORT']}",
            spark_ui=f"http://127.0.0.1:{ports['SPARK_UI_PORT']}",
        )
        # How this machine reaches the stack's bucket (the containers use http://s3:9000).
        s3 = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['S3_PORT']}", "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "ecoval-docker-test", "AWS_SECRET_ACCESS_KEY": s3_secret, "AWS_REGION": "us-east-1",
        }  # fmt: skip
        stack = ComposeStack(client=client, compose=compose, s3=s3)
        stack.timings_s.update(timings)
        stack.facts["image_size_gb"] = round(size / 1e9, 2)
        stack.facts["images"] = {"base": base, **services}
        try:
            mark = time.monotonic()
            run([*compose, "up", "-d", "--no-build"], timeout=900)
            stack.timings_s["compose_up"] = time.monotonic() - mark
            _healthy(stack)
            stack.timings_s["stack_ready"] = time.monotonic() - mark
            yield stack
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "docker-test-logs.txt").write_text(stack.logs())
            mark = time.monotonic()
            run([*compose, "down", "-v", "--remove-orphans", "--timeout", "30"], timeout=600, check=False)
            stack.timings_s["compose_down"] = time.monotonic() - mark
    stack.timings_s["total"] = time.monotonic() - started
    report = {"timings_s": {k: round(v, 1) for k, v in stack.timings_s.items()}, **stack.facts}
    (ARTIFACTS / "docker-test.json").write_text(json.dumps(report, indent=1))
    print(f"\ndocker test: {json.dumps(report)}")


def _connect_app(client) -> dict | None:
    """The spark-connect service's application on the master, once it has registered."""
    apps = _json(f"{client.spark_ui}/json/")["activeapps"]
    return next((app for app in apps if app["name"] == "ecoval-spark-connect"), None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    with compose_stack(tmp_path_factory.mktemp("docker")) as running:
        yield running


def test_the_nightly_dag_values_every_row_with_shards_on_the_gpu_queue_worker(stack: ComposeStack) -> None:
    client = stack.client
    table = "s3://lake/train"
    write_deltalake(table, uuid_keyed(blob_rows(0, ROWS)), storage_options=stack.s3)
    client.api("PATCH", f"dags/{DAG}", {"is_paused": False})
    conf = {
        "table": table,
        "key": "row_id",
        "label": "label",
        "features": "f0,f1,f2",
        "n_clusters": 3,
        "shards": 2,
    }
    mark = time.monotonic()
    run_id = client.trigger(DAG, conf)
    state = client.wait_run(DAG, run_id, timeout=1200)
    stack.timings_s["dag_run"] = time.monotonic() - mark
    stack.facts["stack_memory_mb"] = round(_memory_mb(stack.compose))
    assert state == "success", client.failures(DAG, run_id)

    values = DeltaTable(table, storage_options=stack.s3).to_pyarrow_table(columns=["row_id", "ecoval_value"])
    assert values.num_rows == ROWS
    assert values.column("ecoval_value").null_count == 0
    assert pc.count_distinct(values.column("row_id")).as_py() == ROWS

    secret = stack.s3["AWS_SECRET_ACCESS_KEY"]
    for task in ("detect", "decide", "write", "report"):
        entry = client.api("GET", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value")
        assert secret not in json.dumps(entry)
        assert secret not in client.log(DAG, run_id, task)

    mlflow = client.mlflow()
    xcom = client.api("GET", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/decide/xcomEntries/return_value")
    parent = mlflow.get_run(str(xcom["value"]["run_id"]))
    assert parent.info.status == "FINISHED"
    assert parent.data.params["engine"] == "spark"
    children = mlflow.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["ecoval.shard"] for c in children) == ["shard-0", "shard-1"]
    assert mlflow.get_model_version_by_alias("ecoval_train", "current").run_id == parent.info.run_id
    # The runs' artifacts (the review, the registered model) are in the stack's `mlflow` bucket.
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=stack.s3["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret,
    )
    bucket = s3.list_objects_v2(Bucket="mlflow", Prefix=f"artifacts/{parent.info.experiment_id}/")
    keys = [o["Key"] for o in bucket.get("Contents", [])]
    assert any(parent.info.run_id in k and "/review/" in k for k in keys), keys[:20]
    # The run's workspace lay beside the table in the `lake` bucket, where the shards' worker and
    # the other tasks' worker (two containers) handed each other its parts; only the embeddings stay.
    # Keys ending in "/" are the empty folder markers Arrow's S3 file system leaves for a parent
    # whose last object it deleted (`runs/` once the run's folder is gone): no data.
    lake = s3.list_objects_v2(Bucket="lake", Prefix="_ecoval/train/").get("Contents", [])
    beside = {o["Key"].split("/")[2] for o in lake if not o["Key"].endswith("/")}
    assert len(beside) == 1 and beside.pop().startswith("embeddings_"), sorted(o["Key"] for o in lake)[:20]

    # The shards ran on the worker of the GPU queue, every other task on the default queue's worker.
    gpu_worker = stack.container_hostname("airflow-worker-gpu")
    cpu_worker = stack.container_hostname("airflow-worker")
    ran = [ti for ti in client.task_instances(DAG, run_id) if ti["state"] == "success"]
    shards = [ti for ti in ran if ti["task_id"] == "train_shard"]
    others = [ti for ti in ran if ti["task_id"] != "train_shard"]
    assert len(shards) == 2
    assert {(ti["queue"], ti["hostname"]) for ti in shards} == {("gpu", gpu_worker)}
    assert others and {ti["hostname"] for ti in others} == {cpu_worker}
    stack.facts["tasks"] = {"shards_on": gpu_worker, "others_on": cpu_worker, "tasks_run": len(ran)}

    # Every Spark step attached to the spark-connect service (ECOVAL_SPARK_CONN_ID): no task started
    # an application of its own.
    apps = _json(f"{client.spark_ui}/json/")
    assert [app for app in apps["completedapps"] + apps["activeapps"] if app["name"] == "ecoval"] == []
    assert _connect_app(client)["state"] == "RUNNING"
