"""Shared fixtures: seeds (widened by ECOVAL_TEST_SEEDS), small labelled data, shared datasets."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# Airflow reads its configuration when first imported: a throw-away home (SQLite metadata DB)
# for this test session, the project's dags/ folder, no examples. Each pytest-xdist worker gets
# a home of its own (they inherit the controller's environment, and one SQLite file would be
# written by both).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER or "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix=f"ecoval-airflow-{_WORKER or 'main'}-")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[1] / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# py4j logs its socket closing from __del__ at interpreter exit, after pytest closed the streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


def _seeds() -> list[int]:
    return list(range(int(os.environ.get("ECOVAL_TEST_SEEDS", "3"))))


@pytest.fixture(params=_seeds(), ids=lambda s: f"seed{s}")
def seed(request: pytest.FixtureRequest) -> int:
    """A seed; ``ECOVAL_TEST_SEEDS=N`` runs the seeded tests on N seeds (default 3)."""
    return int(request.param)


def blobs(
    n: int, *, n_classes: int = 3, d: int = 5, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class, with a share ``noise`` of labels flipped."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_classes, d))
    y = rng.integers(0, n_classes, size=n)
    X = centres[y] + rng.normal(size=(n, d))
    flip = rng.random(n) < noise
    y = np.where(flip, (y + rng.integers(1, n_classes, size=n)) % n_classes, y)
    return X, y


def blob_rows(start: int, stop: int, seed: int = 1):
    """Rows ``start..stop`` of one fixed 1000-row draw as an Arrow table (row_id, f0-f2, label).

    Later batches share the distribution of earlier ones unless the seed changes.
    """
    import pyarrow as pa

    X, y = blobs(1000, n_classes=3, d=3, noise=0.1, seed=seed)
    ids = np.arange(start, stop)
    return pa.table({"row_id": ids, "f0": X[ids, 0], "f1": X[ids, 1], "f2": X[ids, 2], "label": y[ids]})


def flipped_rows(start: int, stop: int):
    """Rows ``start..stop`` of :func:`blob_rows` with every label moved to the next class."""
    import pyarrow as pa

    rows = blob_rows(start, stop)
    labels = rows.column("label").to_numpy()
    return rows.set_column(rows.column_names.index("label"), "label", pa.array((labels + 1) % 3))


def uuid_keyed(rows):
    """``rows`` with ``row_id`` replaced by UUID strings (most tables are keyed so), one per id."""
    import uuid

    import pyarrow as pa

    keys = pa.array([str(uuid.uuid5(uuid.NAMESPACE_URL, f"row/{i}")) for i in rows.column("row_id").to_pylist()])
    return rows.set_column(rows.column_names.index("row_id"), "row_id", keys)


def run_config(table, tmp_path, *, engine: str, embedding: bool = False, **flags):
    """A RunConfig over a :func:`blob_rows` table (or an ``id, emb, y`` embedding table) with
    its own SQLite MLflow store in ``tmp_path``."""
    from ecoval_ops.config import load_config

    columns = (
        {"key": "id", "label": "y", "embedding_col": "emb"}
        if embedding
        else {"key": "row_id", "label": "label", "features": "f0,f1,f2"}
    )
    return load_config(
        None, table=str(table), engine=engine, mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", **columns, **flags
    )


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """This worker's Airflow metadata database (its own ``AIRFLOW_HOME``), migrated once."""
    import subprocess
    import sys

    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


@pytest.fixture
def small_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """300 training and 100 validation rows of 3 blobs with 10% label noise."""
    X, y = blobs(400, noise=0.1, seed=7)
    return X[:300], y[:300], X[300:], y[300:]


@pytest.fixture
def shared_dataset():
    """Loader of ``shared/datasets/<name>.npz``; skips when the folder is absent."""

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = SHARED_DATASETS / f"{name}.npz"
        if not path.exists():
            pytest.skip(f"shared dataset {path} is absent (the shared/ folder must sit beside the checkout)")
        with np.load(path, allow_pickle=False) as f:
            return f["X"].astype(np.float64), f["y"].astype(np.int64)

    return load


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession with Delta for the whole test session (it takes ~10 s to start)."""
    from ecoval_ops.lakehouse.spark import spark_session

    session = spark_session("ecoval-tests", master="local[2]", shuffle_partitions=2)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """Postgres, Redis, Spark standalone, MLflow and Airflow started natively once for the session
    (:mod:`tests.stack.services`); skips, saying why, where the services cannot be installed."""
    from tests.stack.services import missing_services, running_stack

    if reason := missing_services():
        pytest.skip(reason)
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 API server (s3proxy, :mod:`tests.s3`) for the session; skips, saying why, without Java."""
    from tests.s3 import missing, running_s3

    if reason := missing():
        pytest.skip(reason)
    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch: pytest.MonkeyPatch):
    """The S3 server, with the standard AWS variables of this test pointing at it."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts Spark (through the session fixture) carries the ``spark`` marker,
    so ``-m "not spark"`` leaves out each one that needs a JVM."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
