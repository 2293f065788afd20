"""A client of the stack's Airflow REST API, MLflow server and Spark master, as a user talks to
them: the natively started stack (:mod:`tests.stack.services`) and the docker stack
(``tests/docker``) are driven through it alike."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

ADMIN = "admin"
ADMIN_PASSWORD = "ecoval-stack-test"


class ApiError(RuntimeError):
    """An error reply of Airflow's REST API."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StackClient:
    """Where the services answer, and the admin login of Airflow's simple auth manager."""

    airflow_url: str
    mlflow_uri: str
    spark_ui: str
    password: str = ADMIN_PASSWORD
    _token: str | None = None

    def token(self, username: str = ADMIN, password: str | None = None) -> str:
        """A JWT of the simple auth manager, from ``POST /auth/token`` (the login a user does)."""
        body = json.dumps({"username": username, "password": password or self.password}).encode()
        request = urllib.request.Request(
            f"{self.airflow_url}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return str(json.load(r)["access_token"])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call Airflow's REST API (``/api/v2/...``) as the admin user; the decoded JSON reply."""
        if self._token is None:
            self._token = self.token()
        request = urllib.request.Request(
            f"{self.airflow_url}/api/v2/{path.lstrip('/')}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                text = r.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, f"{method} {path}: HTTP {e.code} {e.read().decode(errors='replace')[:1000]}") from e
        return json.loads(text) if text else None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """``POST /api/v2/dags/{dag_id}/dagRuns``; the new run's id."""
        reply = self.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(reply["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait for a DAG run to end; its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = str(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        states = self.states(dag_id, run_id)
        raise TimeoutError(f"{dag_id} run {run_id} did not end in {timeout:.0f} s; tasks: {states}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (mapped ones included)."""
        reply = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return list(reply["task_instances"])

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``task_id[map_index]`` -> state of each task instance of a run."""
        return {
            f"{ti['task_id']}" + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
            for ti in self.task_instances(dag_id, run_id)
        }

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """A task instance's log, as the UI shows it."""
        reply = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?map_index={map_index}",
        )
        content = reply.get("content", [])
        return "\n".join(str(line.get("event", line)) if isinstance(line, dict) else str(line) for line in content)

    def failures(self, dag_id: str, run_id: str, lines: int = 20) -> str:
        """The states of a run's tasks and the last ``lines`` of each failed one's log: why a run failed."""
        report = [str(self.states(dag_id, run_id))]
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] == "failed":
                tail = self.log(dag_id, run_id, ti["task_id"], max(1, ti.get("try_number") or 1), ti["map_index"])
                report += [f"--- {ti['task_id']}[{ti['map_index']}]", *tail.splitlines()[-lines:]]
        return "\n".join(report)

    def mlflow(self) -> Any:
        """A client of the stack's MLflow server, for tracking and the registry alike."""
        from mlflow import MlflowClient

        return MlflowClient(self.mlflow_uri, registry_uri=self.mlflow_uri)

    def spark_applications(self) -> list[dict[str, Any]]:
        """The applications the Spark master has run or is running."""
        with urllib.request.urlopen(f"{self.spark_ui}/json/", timeout=10) as r:
            state = json.load(r)
        return list(state.get("activeapps", [])) + list(state.get("completedapps", []))
