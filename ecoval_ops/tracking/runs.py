"""MLflow records of a valuation: parent run, a child run per LCO shard, the registered model.

Runs are written through :class:`mlflow.MlflowClient` bound to one tracking URI, so nothing
depends on MLflow's process-global active run; only model logging goes through the fluent API,
inside this module.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecoval_ops.exceptions import EcovalError
from ecoval_ops.keys import write_keys

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient
    from numpy.typing import NDArray

    from ecoval_ops.valuation import EcoVal

__all__ = [
    "CURRENT_ALIAS",
    "OWNER_TAG",
    "PastRun",
    "Shard",
    "TableInput",
    "ValuationTracker",
    "model_description",
    "model_signature",
]

CURRENT_ALIAS = "current"
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
OWNER_TAG = "ecoval.owner"
"""Tag of a parent run opened outside an orchestrator: the process that opened it."""
_MODEL_CODE = Path(__file__).with_name("_model_code.py")


@dataclass(frozen=True)
class PastRun:
    """One run of a table in the history: when, which mode, its ``night_*`` metrics, its alert."""

    run_id: str
    started_ms: int
    mode: str
    metrics: dict[str, float]
    alert: str | None


@dataclass(frozen=True)
class TableInput:
    """A Delta table version a run read or wrote, as an MLflow dataset of the run.

    Attributes:
        uri: the table.
        version: the version read or written.
        context: its role in the run: ``valuation`` (the source), ``validation`` or ``values``.
        digest: a short digest of its content as the run saw it.
        columns: ``(name, Arrow type, nullable)`` of its schema.
        rows: rows in that version.
    """

    uri: str
    version: int
    context: str
    digest: str
    columns: tuple[tuple[str, str, bool], ...]
    rows: int


@dataclass(frozen=True)
class Shard:
    """A group of masked trainings logged as one child run.

    Attributes:
        name: child run name, for example ``lco-3``.
        left_out: for each training, the clusters left out: ``"none"`` for all rows, ``"half"``
            for the stratified half, ``"3"`` or ``"3,5"`` for leave-cluster-out models.
        utilities: for each training, ``U`` on the validation rows.
    """

    name: str
    left_out: tuple[str, ...]
    utilities: tuple[float, ...]


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
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


def model_signature(columns: dict[str, Any], classes: NDArray[Any]) -> Any:
    """The registered model's input and output columns, so MLflow checks what it is given.

    Inputs: the embedding columns (numbers) or the vector column (an array of numbers), and the
    label column in the training labels' type. Outputs: the row-level value columns.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

    kind = classes.dtype.kind
    label = {"b": "boolean", "i": "long", "u": "long", "f": "double"}.get(kind, "string")
    embedding = columns["embedding"]
    inputs: list[ColSpec | TensorSpec] = (
        [ColSpec(Array("double"), embedding[0])] if columns["is_vector"] else [ColSpec("double", c) for c in embedding]
    )
    outputs: list[ColSpec | TensorSpec] = [
        ColSpec("double", "ecoval_value"),
        ColSpec("double", "ecoval_intrinsic"),
        ColSpec("double", "ecoval_extrinsic"),
        ColSpec("integer", "ecoval_cluster"),
        ColSpec("double", "ecoval_cluster_value"),
        ColSpec("boolean", "ecoval_suspect"),
    ]
    return ModelSignature(inputs=Schema([*inputs, ColSpec(label, columns["label"])]), outputs=Schema(outputs))


def model_description(ecoval: EcoVal, lineage: dict[str, str], config: dict[str, str]) -> str:
    """Markdown description of a registered version: figures, lineage, configuration."""
    game = ecoval.model_.game
    figures = {
        "clusters p": ecoval.n_clusters_,
        "trainings": ecoval.n_trainings_,
        "training rows": int(ecoval.model_.figures()["training_rows"]),
        "U(B)": f"{game.utility_full:.4g}",
        "U(empty)": f"{game.utility_empty:.4g}",
        "Gamma_alpha": f"{game.gamma_alpha:.4g}",
        "Gamma_beta*": f"{game.gamma_beta:.4g}",
        "gamma": f"{game.returns_to_scale:.4g}",
        "Gammas clipped": game.gammas_clipped,
        "suspect share": f"{float(ecoval.result_.suspect.mean()):.3f}",
    }
    lines = ["EcoVal valuation model.", "", "**Fit**", ""]
    lines += [f"- {k}: {v}" for k, v in figures.items()]
    lines += ["", "**Lineage**", ""] + [f"- {k}: {v}" for k, v in lineage.items()]
    lines += ["", "**Configuration**", ""] + [f"- {k}: {v}" for k, v in sorted(config.items())]
    return "\n".join(lines)


class ValuationTracker:
    """Writes one valuation run to MLflow.

    Args:
        tracking_uri: MLflow tracking URI (a SQLite file by default in the CLI).
        experiment: experiment name, created when missing.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment

    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        with _store_lock(self.tracking_uri):
            return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Fail fast when an HTTP tracking server does not answer (MLflow's client retries for minutes).

        Raises:
            EcovalError: the server's ``/health`` endpoint does not answer within ``timeout_s``.
        """
        import urllib.error
        import urllib.parse
        import urllib.request

        parts = urllib.parse.urlsplit(self.tracking_uri)
        if parts.scheme not in ("http", "https"):
            return
        # /health needs no credentials, and urllib does not take them inside the URL.
        host = parts.netloc.rsplit("@", 1)[-1]
        health = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise EcovalError(f"MLflow at {self._safe_uri()} is not reachable: {e}") from e

    def start(
        self, params: dict[str, str], tags: dict[str, str], *, name: str = "ecoval", run_key: str | None = None
    ) -> str:
        """Create the parent run with the configuration as params; returns its run id.

        Args:
            params: the run's configuration.
            tags: tags of the run.
            name: the run's name in the MLflow UI.
            run_key: an orchestrator's id of this valuation (Airflow's DAG run id); a run still
                open under the same key is returned instead of a new one (a retried task).

        Raises:
            EcovalError: the tracking server cannot be reached or refuses the run.
        """
        import hashlib

        client = self._client()
        key = None if run_key is None else hashlib.sha256(run_key.encode()).hexdigest()[:24]
        try:
            with _store_lock(self.tracking_uri):
                experiment = client.get_experiment_by_name(self.experiment)
                experiment_id = (
                    experiment.experiment_id
                    if experiment is not None
                    else client.create_experiment(self.experiment, artifact_location=self._artifact_location())
                )
            if key is not None:
                found = client.search_runs(
                    [experiment_id], filter_string=f"tags.`ecoval.run_key` = '{key}' and attributes.status = 'RUNNING'"
                )
                if found:
                    return str(found[0].info.run_id)
            run = client.create_run(
                experiment_id, run_name=name, tags={**tags, **({"ecoval.run_key": key} if key else {})}
            )
        except Exception as e:  # MLflow raises many types for a bad URI or an unreachable server
            raise EcovalError(f"MLflow at {self._safe_uri()} is not usable: {type(e).__name__}: {e}") from e
        for name, value in params.items():
            client.log_param(run.info.run_id, name, value)
        return str(run.info.run_id)

    def log_shard(self, parent_run_id: str, shard: Shard) -> str:
        """A child run for one shard: params name the clusters left out, metrics the utilities.

        Runs while the parent is open, from any process (``mlflow.parentRunId``). A shard
        logged before under the same parent is not logged again (a retried task).
        """
        client = self._client()
        parent = client.get_run(parent_run_id)
        found = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.ecoval.shard = '{shard.name}'",
        )
        if found:
            return str(found[0].info.run_id)
        child = client.create_run(
            parent.info.experiment_id,
            run_name=shard.name,
            tags={"mlflow.parentRunId": parent_run_id, "ecoval.shard": shard.name},
        )
        client.log_param(child.info.run_id, "clusters_left_out", ";".join(shard.left_out))
        client.log_param(child.info.run_id, "trainings", str(len(shard.utilities)))
        for step, (clusters, utility) in enumerate(zip(shard.left_out, shard.utilities, strict=True)):
            client.log_metric(child.info.run_id, "utility", utility, step=step)
            client.set_tag(child.info.run_id, f"step_{step}", clusters)
        client.set_terminated(child.info.run_id)
        return str(child.info.run_id)

    def log_tables(self, run_id: str, tables: list[TableInput]) -> None:
        """Log each table version the run read or wrote as an input dataset, with its schema and rows.

        The dataset's name carries the version: MLflow's ``DeltaDatasetSource`` leaves out version
        0 (it tests the version for truth).
        """
        from mlflow.data.delta_dataset_source import DeltaDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(
                    name=f"{Path(t.uri).name}@v{t.version}",
                    digest=t.digest,
                    source_type="delta_table",
                    source=DeltaDatasetSource(path=t.uri, delta_table_version=t.version).to_json(),
                    schema=json.dumps(
                        {"mlflow_colspec": [{"name": n, "type": k, "required": not null} for n, k, null in t.columns]}
                    ),
                    profile=json.dumps({"num_rows": t.rows}),
                ),
                tags=[InputTag("mlflow.data.context", t.context)],
            )
            for t in tables
        ]
        client = self._client()
        # Two runs of one table version log the same dataset, which the store creates once.
        with _store_lock(self.tracking_uri):
            client.log_inputs(run_id, datasets=inputs)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Log scalar metrics on a run."""
        client = self._client()
        for name, value in metrics.items():
            client.log_metric(run_id, name, float(value))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags on a run."""
        client = self._client()
        for name, value in tags.items():
            client.set_tag(run_id, name, value)

    def history(self, table: str, limit: int = 30) -> list[PastRun]:
        """The newest ``limit`` parent runs of ``table`` with their night figures, oldest first.

        Runs that failed, or that logged no night figures (before monitoring existed), are left
        out; a run still open (the one reporting) counts.
        """
        client = self._client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        found: list[PastRun] = []
        for run in client.search_runs(
            [experiment.experiment_id],
            filter_string="attributes.status != 'FAILED' and metrics.night_rows >= 0",
            order_by=["attributes.start_time DESC"],
            max_results=max(limit * 4, 100),
        ):
            if run.data.tags.get("ecoval.table") != table:
                continue
            found.append(
                PastRun(
                    run_id=run.info.run_id,
                    started_ms=int(run.info.start_time),
                    mode=run.data.tags.get("ecoval.mode", ""),
                    metrics={k: float(v) for k, v in run.data.metrics.items() if k.startswith("night_")},
                    alert=run.data.tags.get("ecoval.alert"),
                )
            )
            if len(found) == limit:
                break
        return found[::-1]

    def close_stale(self, table: str, gone: Callable[[str], bool]) -> list[str]:
        """Close as KILLED the parent runs of ``table`` left RUNNING by a process that is gone.

        A run killed outside an orchestrator (SIGKILL, a lost machine) never closes its parent
        run; the next run of the table closes it. Only runs that record their owner
        (``ecoval.owner``, see :func:`~ecoval_ops.process.process_owner`) are judged, by ``gone``.

        Returns:
            The ids of the runs closed.
        """
        client = self._client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        closed = []
        for run in client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        ):
            owner = run.data.tags.get(OWNER_TAG)
            if run.data.tags.get("ecoval.table") == table and owner and gone(owner):
                client.set_tag(run.info.run_id, "ecoval.closed_as_stale", "its process is gone")
                client.set_terminated(run.info.run_id, "KILLED")
                closed.append(str(run.info.run_id))
        return closed

    def finish(self, run_id: str, *, failed: bool = False) -> None:
        """Close a run as FINISHED or FAILED."""
        self._client().set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Log every file of ``folder`` under ``artifact_path`` of the run."""
        self._client().log_artifacts(run_id, str(folder), artifact_path)

    def register(
        self,
        run_id: str,
        ecoval: EcoVal,
        *,
        model_name: str,
        columns: dict[str, Any],
        lineage: dict[str, str],
        config: dict[str, str],
        member_keys: pa.Array | None = None,
    ) -> str:
        """Log the fitted state as a pyfunc model on the run, register it, alias it ``current``.

        ``member_keys`` (the row keys of the state's members, in member order) go with the
        model, so a row's value can be explained by the rows it was compared with.

        The registered model and the version carry a description: the fit's figures, the table
        and version it was fitted on, and the run's configuration; each ``lineage`` entry is
        also a version tag ``ecoval.<name>`` (:meth:`version_tag`). Registering again for the
        same run returns the version registered before.

        Returns:
            The registered model version.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        client = self._client()
        earlier = self.registered_version(model_name, run_id)
        if earlier is not None:
            with _store_lock(self.tracking_uri):
                client.set_registered_model_alias(model_name, CURRENT_ALIAS, earlier)
            return earlier
        with tempfile.TemporaryDirectory() as tmp:
            state = ecoval.save(Path(tmp) / "state")
            columns_file = Path(tmp) / "columns.json"
            columns_file.write_text(json.dumps(columns))
            artifacts = {"state": str(state), "columns": str(columns_file)}
            if member_keys is not None:
                artifacts["member_keys"] = str(write_keys(member_keys, Path(tmp) / "member_keys.parquet"))
            with self._fluent():
                with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
                    # The signature says what the model takes; no example row is stored with it.
                    warnings.filterwarnings("ignore", message=".*input example was not provided")
                    info = mlflow.pyfunc.log_model(
                        name="valuation_model",
                        python_model=str(_MODEL_CODE),
                        artifacts=artifacts,
                        signature=model_signature(columns, ecoval.classes_),
                    )
                # Leaving start_run's block ends the run FINISHED; the valuation is still running.
                client.update_run(run_id, status="RUNNING")
                # Registered through the client as MLflow's fluent register_model does, without
                # the lines that one prints on stderr ("Successfully registered model ...").
                with _store_lock(self.tracking_uri):
                    try:
                        client.get_registered_model(model_name)
                    except MlflowException:
                        client.create_registered_model(model_name)
                source = f"models:/{info.model_id}"
                created = client.create_model_version(model_name, source, run_id=run_id, model_id=info.model_id)
        version = str(created.version)
        client.update_model_version(model_name, version, description=model_description(ecoval, lineage, config))
        for name, value in lineage.items():
            client.set_model_version_tag(model_name, version, f"ecoval.{name}", value)
        client.update_registered_model(
            model_name,
            description=f"EcoVal valuation model of {lineage.get('table', '?')}: each refit registers a new version; "
            f"alias '{CURRENT_ALIAS}' names the one nightly runs value new rows with.",
        )
        with _store_lock(self.tracking_uri):
            client.set_registered_model_alias(model_name, CURRENT_ALIAS, version)
        return version

    def version_tag(self, model_name: str, version: str, name: str) -> str | None:
        """The lineage entry ``name`` (tag ``ecoval.<name>``) of a registered version; None without it."""
        tag = self._client().get_model_version(model_name, version).tags.get(f"ecoval.{name}")
        return None if tag is None else str(tag)

    def registered_version(self, model_name: str, run_id: str) -> str | None:
        """The newest version of ``model_name`` registered from run ``run_id``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            found = list(self._client().search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"))
        except MlflowException:
            return None
        return str(max(int(v.version) for v in found)) if found else None

    def load_model(self, model_name: str, version: str) -> Any:
        """The python model of a registered version (what its pyfunc wraps).

        Loaded from the version's logged model through this store, never through the
        process's registry URI, which may name another store.

        Raises:
            MlflowException: no such model version.
        """
        import mlflow

        source = self._client().get_model_version(model_name, version).source
        with self._fluent():
            return mlflow.pyfunc.load_model(source).unwrap_python_model()

    def load_current(self, model_name: str) -> tuple[EcoVal, str] | None:
        """The valuation model with alias ``current`` and its version, or None if there is none."""
        from mlflow.exceptions import MlflowException

        try:
            version = str(self._client().get_model_version_by_alias(model_name, CURRENT_ALIAS).version)
        except MlflowException:
            return None
        return self.load_model(model_name, version).ecoval, version

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
