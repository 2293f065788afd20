"""The production services, started natively for the tests marked ``stack`` (issue 14).

:func:`running_stack` starts, on loopback ports it picks, with health checks instead
of sleeps: PostgreSQL (Debian's binaries, as the ``postgres`` user when run as root), Redis, a
Spark standalone master and one worker (pyspark's own ``spark-class``; :func:`spark_connect_server`
runs ``ecoval spark-connect`` on it for the Airflow connection ``spark_connect_default``), s3proxy (a real S3 API,
:mod:`tests.s3`, buckets ``lake`` and ``mlflow``), an MLflow server on Postgres with its
artifacts in the ``mlflow`` bucket, and Airflow 3 (``db migrate`` on Postgres,
then api-server, scheduler and dag-processor with the LocalExecutor). Each service runs in a
session of its own and is stopped by its recorded PID (its process group) at the end.

Where Postgres or Redis is missing, :func:`missing_services` installs them with apt-get when it
runs as root, else says why it cannot (and the stack tests skip with that reason).
``../shared/research/native-stack.md`` has the flags and pitfalls.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.s3 import S3Server, answers, s3proxy_argv
from tests.s3 import missing as missing_s3
from tests.stack.client import ADMIN, ADMIN_PASSWORD, StackClient

ROOT = Path(__file__).resolve().parents[2]
PRODUCER_DAGS = Path(__file__).with_name("dags")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
GPU_POOL = "ecoval_gpu"
PACKAGES = {"postgresql": PG_BIN / "initdb", "redis-server": Path("/usr/bin/redis-server")}


def free_port() -> int:
    """A loopback port no service listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes] | None, log: Path, timeout: float
) -> float:
    """Poll ``ready`` until it holds; fail with the log's tail if the process dies or time runs out."""
    start = time.monotonic()
    while not ready():
        if (process is not None and process.poll() is not None) or time.monotonic() - start > timeout:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s:\n{tail}")
        time.sleep(0.25)
    return time.monotonic() - start


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def missing_services() -> str | None:
    """Install Postgres and Redis where they are missing and this is root on Debian; else say why not."""
    if reason := missing_s3():
        return reason
    missing = [name for name, binary in PACKAGES.items() if not binary.exists()]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        install = f"apt-get install {' '.join(missing)}"
        return f"{', '.join(missing)} not installed and this is not root on Debian ({install})"
    for attempt in ([], ["update"]):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
        done = subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, check=False)
        if done.returncode == 0:
            return None
    return f"apt-get install {' '.join(missing)} failed: {done.stderr.decode()[-500:]}"


@dataclass(kw_only=True)
class Stack(StackClient):
    """The running services: their URLs, folders and processes."""

    home: Path
    lakehouse: Path
    pg_port: int
    redis_port: int
    spark_master: str
    env: dict[str, str]
    connect_port: int = 0
    s3: S3Server | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    startup_s: dict[str, float] = field(default_factory=dict)
    cleanup: list[Path] = field(default_factory=list)

    def postgres_uri(self, database: str) -> str:
        """A SQLAlchemy URI of one database of the stack's Postgres."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.pg_port}/{database}"

    def stop(self) -> None:
        """Stop every service by its recorded PID (its process group), newest first."""
        for name, process in reversed(list(self.processes.items())):
            _terminate(process)
            self.processes.pop(name)
        for folder in self.cleanup:
            shutil.rmtree(folder, ignore_errors=True)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group of a service still running, SIGKILL when it has not ended in 20 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _start(stack: Stack, name: str, argv: list[str], env: dict[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    log = stack.home / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    popen.setdefault("cwd", stack.home)
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    stack.processes[name] = process
    return process


def _postgres(stack: Stack) -> None:
    # initdb refuses root: there the cluster belongs to the postgres user, in a folder of its own
    # outside the test's temporary tree (which only root may enter).
    data = Path(tempfile.mkdtemp(prefix="ecoval-stack-pg-"))
    stack.cleanup.append(data)
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        as_user = {"user": "postgres", "group": "postgres"}
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(data / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True, capture_output=True, cwd=data, **as_user,
    )  # fmt: skip
    process = _start(
        stack,
        "postgres",
        [str(PG_BIN / "postgres"), "-D", str(data / "data"), "-p", str(stack.pg_port), "-k", str(data),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        stack.env, cwd=data, **as_user,
    )  # fmt: skip
    log = stack.home / "logs" / "postgres.log"

    def ready() -> bool:
        done = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(stack.pg_port)], capture_output=True, check=False
        )
        return done.returncode == 0

    stack.startup_s["postgres"] = _wait("postgres", ready, process, log, 60)
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="postgres", dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for database in ("airflow", "mlflow"):
            cursor.execute(f"CREATE DATABASE {database}")
    connection.close()


def _redis(stack: Stack) -> None:
    process = _start(
        stack,
        "redis",
        ["redis-server", "--port", str(stack.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stack.env,
    )

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", stack.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    stack.startup_s["redis"] = _wait("redis", ready, process, stack.home / "logs" / "redis.log", 30)


def _spark(stack: Stack, master_port: int, ui_port: int, cores: int = 2) -> Callable[[], None]:
    import pyspark

    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    env = {**stack.env, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_DAEMON_MEMORY": "512m"}
    master = _start(
        stack, "spark-master",
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(master_port),
         "--webui-port", str(ui_port)],
        env,
    )  # fmt: skip
    worker = _start(
        stack, "spark-worker",
        [spark_class, "org.apache.spark.deploy.worker.Worker", stack.spark_master, "--host", "127.0.0.1",
         "--cores", str(cores), "--memory", "2g", "--webui-port", str(free_port()),
         "--work-dir", str(stack.home / "spark-work")],
        env,
    )  # fmt: skip
    started = time.monotonic()

    def ready() -> None:
        def registered() -> bool:
            try:
                with urllib.request.urlopen(f"{stack.spark_ui}/json/", timeout=3) as r:
                    return int(json.load(r).get("aliveworkers", 0)) >= 1
            except (OSError, ValueError):
                return False

        _wait("spark master", registered, master, stack.home / "logs" / "spark-master.log", 120)
        if worker.poll() is not None:
            raise RuntimeError("the Spark worker exited")
        stack.startup_s["spark"] = time.monotonic() - started

    return ready


@contextmanager
def spark_connect_server(stack: Stack) -> Iterator[str]:
    """`ecoval spark-connect` on the standalone master, as a deployment runs it (one core, 512 MB
    executors), at the port of the stack's ``spark_connect_default`` connection until the block ends.

    Started for the runs that attach to it only, so the runs that start applications of their own
    meet no resident server JVMs and time as they did before the server existed.
    """
    server = _start(
        stack, "spark-connect",
        [sys.executable, "-m", "ecoval_ops.cli", "spark-connect", "--master", stack.spark_master,
         "--host", "127.0.0.1", "--port", str(stack.connect_port), "--cores", "1", "--executor-memory", "512m"],
        stack.env,
    )  # fmt: skip
    started = time.monotonic()
    log = stack.home / "logs" / "spark-connect.log"
    try:
        _wait("spark connect", lambda: "listening on" in log.read_text(errors="replace"), server, log, 240)
        stack.startup_s["spark_connect"] = time.monotonic() - started
        yield f"sc://127.0.0.1:{stack.connect_port}"
    finally:
        _terminate(server)
        stack.processes.pop("spark-connect", None)


def _s3(stack: Stack, port: int) -> None:
    """s3proxy with the buckets ``lake`` (tables) and ``mlflow`` (MLflow's artifacts)."""
    argv, stack.s3 = s3proxy_argv(stack.home / "s3", port)
    process = _start(stack, "s3proxy", argv, stack.env)
    stack.startup_s["s3proxy"] = _wait(
        "s3proxy", lambda: answers(stack.s3), process, stack.home / "logs" / "s3proxy.log", 60
    )
    for bucket in ("lake", "mlflow"):
        stack.s3.bucket(bucket)
    stack.env.update(stack.s3.env())


def _mlflow(stack: Stack, port: int) -> Callable[[], None]:
    # Artifacts in the bucket, proxied by the server (clients need no S3 access); boto3 reads the
    # AWS variables of the stack's environment, MLFLOW_S3_ENDPOINT_URL names s3proxy.
    assert stack.s3 is not None
    env = {**stack.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_S3_ENDPOINT_URL": stack.s3.endpoint}
    process = _start(
        stack, "mlflow",
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", stack.postgres_uri("mlflow"), "--artifacts-destination", "s3://mlflow/artifacts"],
        env,
    )  # fmt: skip
    started = time.monotonic()

    def ready() -> None:
        _wait("mlflow server", lambda: _http_ok(f"{stack.mlflow_uri}/health"), process,
              stack.home / "logs" / "mlflow.log", 180)  # fmt: skip
        stack.startup_s["mlflow"] = time.monotonic() - started

    return ready


def _airflow(stack: Stack, api_port: int) -> None:
    bin_dir = Path(sys.executable).parent
    started = time.monotonic()
    migrate = subprocess.run(
        [str(bin_dir / "airflow"), "db", "migrate"], env=stack.env, capture_output=True, text=True, cwd=stack.home
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    stack.startup_s["airflow_db_migrate"] = time.monotonic() - started
    api = _start(stack, "airflow-api-server", [str(bin_dir / "airflow"), "api-server", "--port", str(api_port)],
                 stack.env)  # fmt: skip
    _start(stack, "airflow-scheduler", [str(bin_dir / "airflow"), "scheduler"], stack.env)
    _start(stack, "airflow-dag-processor", [str(bin_dir / "airflow"), "dag-processor"], stack.env)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{stack.airflow_url}/api/v2/monitor/health", timeout=3) as r:
                health = json.load(r)
        except (OSError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor")
        return all(health.get(part, {}).get("status") == "healthy" for part in parts)

    _wait("airflow", healthy, api, stack.home / "logs" / "airflow-api-server.log", 180)

    def parsed() -> bool:
        try:
            return {"ecoval_nightly", "ecoval_producer"} <= {d["dag_id"] for d in stack.api("GET", "dags")["dags"]}
        except (OSError, urllib.error.URLError):
            return False

    _wait("the DAGs to be parsed", parsed, stack.processes["airflow-dag-processor"],
          stack.home / "logs" / "airflow-dag-processor.log", 180)  # fmt: skip

    # Unpaused at creation, ecoval_nightly runs its latest cron slot at once, with no settings:
    # it has ended before a test sets any Variable it would read.
    def first_slot_done() -> bool:
        runs = stack.api("GET", "dags/ecoval_nightly/dagRuns?run_type=scheduled")["dag_runs"]
        return bool(runs) and runs[0]["state"] in ("success", "failed")

    _wait("the first scheduled run", first_slot_done, stack.processes["airflow-scheduler"],
          stack.home / "logs" / "airflow-scheduler.log", 180)  # fmt: skip
    # Tasks of a pool that does not exist stay scheduled for ever: a deployment creates it once.
    stack.api("POST", "pools", {"name": GPU_POOL, "slots": 1, "description": "LCO training shards"})
    stack.startup_s["airflow"] = time.monotonic() - started


def _memory_mb(stack: Stack) -> float:
    """Resident memory of every process of the stack (each service's process group), in MB."""
    import psutil

    total = 0.0
    for process in stack.processes.values():
        try:
            group = os.getpgid(process.pid)
        except ProcessLookupError:
            continue
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == group:
                    total += p.memory_info().rss
            except (ProcessLookupError, psutil.Error):
                continue
    return total / 2**20


@contextmanager
def spark_standalone(home: Path) -> Iterator[Stack]:
    """A Spark standalone master and one worker (2 cores, 2 GB), alone, running in ``home`` until the block ends.

    The returned stack has only ``spark_master``, ``spark_ui`` and ``env`` (the interpreter for
    the executors' Python workers) set.
    """
    master_port, ui_port = free_port(), free_port()
    stack = Stack(
        home=home,
        lakehouse=home,
        pg_port=0,
        redis_port=0,
        spark_master=f"spark://127.0.0.1:{master_port}",
        spark_ui=f"http://127.0.0.1:{ui_port}",
        mlflow_uri="",
        airflow_url="",
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ECOVAL_")},
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
        },
    )
    try:
        _spark(stack, master_port, ui_port)()
        yield stack
    finally:
        stack.stop()


@contextmanager
def running_stack(home: Path) -> Iterator[Stack]:
    """The whole production stack, running natively in ``home`` until the block ends."""
    lakehouse = home / "lakehouse"
    lakehouse.mkdir()
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "ecoval_nightly.py", dags)
    for dag_file in PRODUCER_DAGS.glob("*.py"):
        shutil.copy(dag_file, dags)
    pg_port, redis_port, master_port, ui_port, mlflow_port, api_port, s3_port, connect_port = (
        free_port() for _ in range(8)
    )
    airflow_home = home / "airflow"
    airflow_home.mkdir()
    passwords = airflow_home / "passwords.json"
    passwords.write_text(json.dumps({ADMIN: ADMIN_PASSWORD}))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ECOVAL_"))}
    stack = Stack(
        home=home,
        lakehouse=lakehouse,
        pg_port=pg_port,
        redis_port=redis_port,
        spark_master=f"spark://127.0.0.1:{master_port}",
        spark_ui=f"http://127.0.0.1:{ui_port}",
        mlflow_uri=f"http://127.0.0.1:{mlflow_port}",
        airflow_url=f"http://127.0.0.1:{api_port}",
        env={},
        connect_port=connect_port,
    )
    stack.env = {
        **base_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{stack.airflow_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.postgres_uri("airflow"),
        "AIRFLOW__API_AUTH__JWT_SECRET": "ecoval-stack-test-secret",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "ECOVAL_TABLE": str(lakehouse / "train"),
        "ECOVAL_MLFLOW_URI": stack.mlflow_uri,
        "ECOVAL_SPARK_MASTER": stack.spark_master,
        # Airflow's Spark provider's connection to the stack's Spark Connect server (spark_conn_id).
        "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT": json.dumps(
            {"conn_type": "spark_connect", "host": "127.0.0.1", "port": connect_port}
        ),
    }
    try:
        _postgres(stack)
        _redis(stack)
        _s3(stack, s3_port)
        # A third core slot for the Spark Connect server's application (spark_connect_server): the
        # tasks that start applications of their own still get the two an unsized one takes.
        spark_ready = _spark(stack, master_port, ui_port, cores=3)
        mlflow_ready = _mlflow(stack, mlflow_port)
        _airflow(stack, api_port)
        mlflow_ready()
        spark_ready()
        stack.startup_s["memory_mb"] = _memory_mb(stack)
        (home / "startup.json").write_text(json.dumps(stack.startup_s, indent=1))
        print(f"\nstack up: {json.dumps({k: round(v, 1) for k, v in stack.startup_s.items()})}")
        yield stack
    finally:
        started = time.monotonic()
        stack.stop()
        print(f"\nstack stopped in {time.monotonic() - started:.1f} s")
