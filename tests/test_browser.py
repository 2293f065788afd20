"""A person's view of a run: the MLflow UI in headless Chromium lists the run's review artifacts.

Once against an MLflow server over a SQLite store, once against the stack's server on Postgres
(marked ``stack``). Starts a real MLflow server on a free loopback port over a real valuation run, opens the run's
artifacts page in Debian's Chromium (installed by ``make test`` where it can be; the test
installs nothing), keeps a screenshot under ``test-artifacts/`` and checks the rendered page.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from deltalake import write_deltalake
from mlflow import MlflowClient

from ecoval_ops.pipeline import run_valuation
from tests.conftest import blob_rows, run_config

pytestmark = [pytest.mark.integration, pytest.mark.mlflow, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("ECOVAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    pytest.skip(f"no Chromium on this machine ({', '.join(BROWSERS)} not on PATH): `make test` installs it with apt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_ui(tmp_path):
    """A valued run and an MLflow server over its store; yields (base URL, experiment id, run id)."""
    path = tmp_path / "lake" / "events"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=3)
    run_id = run_valuation(cfg).run_id
    experiment_id = MlflowClient(cfg.tracking_uri).get_run(run_id).info.experiment_id
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", cfg.tracking_uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"MLflow server did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield base, experiment_id, run_id
    finally:
        server.terminate()
        server.wait(timeout=30)


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1500,1100",
        "--virtual-time-budget=30000",
        "--run-all-compositor-stages-before-draw",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture
def stack_mlflow_ui(stack, tmp_path):
    """A valued run on the stack's MLflow server (Postgres store, proxied artifacts)."""
    path = stack.lakehouse / "browser_events"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=3).with_settings(mlflow_uri=stack.mlflow_uri)
    run_id = run_valuation(cfg).run_id
    return stack.mlflow_uri, stack.mlflow().get_run(run_id).info.experiment_id, run_id


@pytest.mark.parametrize(
    "server", ["mlflow_ui", pytest.param("stack_mlflow_ui", marks=[pytest.mark.stack, pytest.mark.airflow])]
)
def test_mlflow_ui_lists_the_review_artifacts(request, server) -> None:
    browser = _browser()
    base, experiment_id, run_id = request.getfixturevalue(server)
    url = f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/review/value_histogram.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{server}_run_artifacts.png"
    shot.unlink(missing_ok=True)
    taken = _chromium(browser, f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    dom = _chromium(browser, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "review/value_histogram.png" in dom.stdout, "the selected artifact is not shown"
    (ARTIFACTS / f"{server}_run_artifacts.html").write_text(dom.stdout)
    for name in ("review", "value_histogram.png", "cluster_map.png", "removal_curve.png", "cluster_values.png",
                 "clusters.csv", "clusters.html", "top_bottom_rows.csv", "diagnostics.json"):  # fmt: skip
        assert name in dom.stdout, f"{name} not listed on the run's artifacts page"
    # The run's overview: named after what it did, described by its summary, its table a dataset.
    overview = _chromium(browser, "--dump-dom", f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
    assert overview.returncode == 0, overview.stderr[-2000:]
    (ARTIFACTS / f"{server}_run_overview.html").write_text(overview.stdout)
    assert "events@v0 refit" in overview.stdout, "the run is not named after what it did"
    assert "rows valued (" in overview.stdout, "the run's description is not its summary"
    assert "events@v0" in overview.stdout.replace("events@v0 refit", ""), "the source table is not a dataset"
