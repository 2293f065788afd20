"""The session's running stack (:mod:`tests.stack.services`) for the tests marked ``stack``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack.services import Stack, missing_services, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Postgres, Redis, Spark standalone, MLflow and Airflow, started once for the test session."""
    if reason := missing_services():
        pytest.skip(reason)
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack
