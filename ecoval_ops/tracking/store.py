"""One MLflow store: its client, the lock that guards a SQLite store, and MLflow's global URI for a fluent call.

Runs are written through :class:`mlflow.MlflowClient` bound to one tracking URI, so nothing
depends on MLflow's process-global active run; only model logging and loading go through the
fluent API, inside :meth:`MlflowStore._fluent`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import EcovalError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MlflowStore", "store_lock"]

_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
"""The servers' default ports, for a database URI that names none."""


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store while it is created or a name in it is claimed.

    Two runs started at once on a new SQLite file both find no tables and both migrate it
    (one fails inside alembic), and both find no experiment, registered model, dataset or
    alias and both create it (one fails on the duplicate name).
    """
    import fcntl

    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri == prefix + ":memory:":
        yield
        return
    lock = Path(tracking_uri[len(prefix) :].split("?", 1)[0] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MlflowStore:
    """An MLflow tracking store and the experiment a valuation's runs go to.

    Args:
        tracking_uri: MLflow tracking URI (a SQLite file by default in the CLI).
        experiment: experiment name, created when missing.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment

    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        with store_lock(self.tracking_uri):
            return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Fail fast on a tracking store that cannot be used.

        An HTTP server or a database that does not answer (MLflow's client retries either for
        minutes), a database login refused, or any other store that MLflow refuses (a ``file:``
        store unless ``MLFLOW_ALLOW_FILE_STORE``, a database driver not installed).

        Raises:
            EcovalError: the server's ``/health`` endpoint or the database does not answer within
                ``timeout_s``, or the store is refused; one line, the URI's credentials scrubbed.
        """
        import urllib.error
        import urllib.parse
        import urllib.request

        parts = urllib.parse.urlsplit(self.tracking_uri)
        if parts.scheme not in ("http", "https"):
            self._open(timeout_s)
            return
        # /health needs no credentials, and urllib does not take them inside the URL.
        host = parts.netloc.rsplit("@", 1)[-1]
        health = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise EcovalError(f"MLflow at {self._safe_uri()} is not reachable: {e}") from e

    def _open(self, timeout_s: float) -> None:
        import urllib.parse

        from ecoval_ops.identifiers import scrub_uri

        try:
            self._connect_database(timeout_s)
            self._client()
        # Whatever MLflow or the store's driver raises (a refused file store, a database driver not
        # installed, a refused login) means the same to the user: this URI cannot be used.
        except Exception as e:
            reason = scrub_uri(" ".join(str(e).split()))
            password = urllib.parse.urlsplit(self.tracking_uri).password
            if password:
                # A driver may name the password outside any URI.
                reason = reason.replace(password, "***")
            raise EcovalError(f"MLflow cannot use the tracking store {self._safe_uri()}: {reason}") from e

    def _connect_database(self, timeout_s: float) -> None:
        """Connect once to a database store: its server must answer within ``timeout_s``.

        MLflow retries a failed connection with a doubling back-off for many minutes, logging a
        warning each time, where one try tells whether the store can be used. The engine is
        created first so that a driver that is not installed is named as such.
        """
        import socket

        import sqlalchemy
        from mlflow.store.db.db_types import DATABASE_ENGINES, SQLITE

        url = sqlalchemy.engine.make_url(self.tracking_uri)
        backend = url.get_backend_name()
        if backend not in DATABASE_ENGINES or backend == SQLITE:
            return
        engine = sqlalchemy.create_engine(url)
        try:
            port = url.port or _DATABASE_PORTS.get(backend)
            if url.host and port:
                # A host that drops packets would hold the driver's connect for its own timeout.
                socket.create_connection((url.host, port), timeout=timeout_s).close()
            with engine.connect():
                pass
        finally:
            engine.dispose()

    @contextmanager
    def _fluent(self) -> Iterator[None]:
        """Point MLflow's process-global tracking URI at this store for a fluent-API call, then restore it.

        MLflow's artifact progress bars are off meanwhile, so a quiet run stays quiet.

        The registry URI is left alone: ``mlflow.set_registry_uri`` also exports
        ``MLFLOW_REGISTRY_URI``, after which every client of the process and of its children
        registers models in this store whatever tracking URI it is given. Registration goes
        through a client with an explicit registry URI instead.
        """
        import os

        import mlflow

        previous = mlflow.get_tracking_uri()
        # MLflow draws download progress bars on stderr wherever tqdm is installed.
        bars = os.environ.get(_PROGRESS_BAR_ENV)
        mlflow.set_tracking_uri(self.tracking_uri)
        os.environ[_PROGRESS_BAR_ENV] = "false"
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
            if bars is None:
                os.environ.pop(_PROGRESS_BAR_ENV, None)
            else:
                os.environ[_PROGRESS_BAR_ENV] = bars

    def _artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts.

        Beside a SQLite store (``<folder>/mlartifacts``) rather than in ``./mlruns`` of whatever
        directory the job ran in; other stores keep their server's default.
        """
        prefix = "sqlite:///"
        if not self.tracking_uri.startswith(prefix):
            return None
        return (Path(self.tracking_uri[len(prefix) :]).parent / "mlartifacts").resolve().as_uri()

    def _safe_uri(self) -> str:
        from ecoval_ops.identifiers import scrub_uri

        return scrub_uri(self.tracking_uri)
