"""The docker stack, checked with what runs without a Docker engine: YAML, the Compose schema,
the Dockerfile's instructions, and the compose file's references to the project."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_compose_file_matches_the_compose_specification(compose) -> None:
    import jsonschema

    # The Compose specification's JSON schema (vendored from docker-compose 1.29.2, Apache-2.0).
    validator = jsonschema.Draft201909Validator(json.loads((DOCKER / "compose-spec.schema.json").read_text()))
    validator.validate(compose)
    broken = {
        **compose,
        "services": {**compose["services"], "mlflow": {**compose["services"]["mlflow"], "ports": 5000}},
    }
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_compose_file_has_every_service_of_the_stack(compose) -> None:
    services = compose["services"]
    for name in (
        "postgres",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-worker-gpu",
        "mlflow",
        "spark-master",
        "spark-worker",
    ):
        assert name in services, name
    assert services["airflow-scheduler"]["command"] == ["airflow", "scheduler"]
    assert "lakehouse" in compose["volumes"]
    for name in ("airflow-worker", "mlflow", "spark-master", "spark-worker"):
        assert any(v.startswith("lakehouse:") for v in services[name]["volumes"]), name
    # The GPU worker takes the shards' queue only, the other worker every queue but that one.
    assert services["airflow-worker-gpu"]["command"][-2:] == ["--queues", "${ECOVAL_GPU_QUEUE:-gpu}"]
    assert services["airflow-worker"]["command"][-2:] == ["--queues", "default"]
    assert "deploy" in services["airflow-worker-gpu"] and "deploy" not in services["airflow-worker"]
    env = services["airflow-worker"]["environment"]
    assert env["ECOVAL_MLFLOW_URI"] == "http://mlflow:5000"
    assert env["ECOVAL_SPARK_MASTER"] == "spark://spark-master:7077"
    assert "postgres:5432/mlflow" in " ".join(services["mlflow"]["command"])


def test_files_the_stack_mounts_or_copies_exist(compose) -> None:
    root = DOCKER.parent
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), source
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (root / source).exists(), source


def test_dockerfile_instructions() -> None:
    lines = [
        line
        for line in (DOCKER / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    instructions = [line.split()[0] for line in lines]
    assert set(instructions) <= {"FROM", "USER", "RUN", "ENV", "ARG", "WORKDIR", "COPY", "ENTRYPOINT", "CMD"}
    # The base is an argument (make docker-test builds it with debootstrap where none can be pulled).
    assert lines[:2] == ["ARG BASE_IMAGE=debian:bookworm-slim", "FROM ${BASE_IMAGE}"]
    assert re.search(r"openjdk-17-jre-headless", " ".join(lines))
    # The image ends as the unprivileged airflow user, who also runs the project's install.
    users = [line for line in lines if line.startswith("USER")]
    assert users == ["USER airflow"]
    assert lines.index(users[-1]) < next(i for i, line in enumerate(lines) if "pip install" in line)


def test_the_build_context_leaves_out_everything_the_image_does_not_copy() -> None:
    ignore = [line for line in (DOCKER.parent / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignore[0] == "*"
    kept = {line[1:] for line in ignore if line.startswith("!")}
    copied = {
        part.rstrip("/")
        for line in (DOCKER / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY")
        for part in line.split()[1:-1]
        if not part.startswith("--")
    }
    assert copied == kept
