"""MLflow records of a valuation: the parent run, a child run per LCO shard, the table's run history.

The model registry is :mod:`.registry` (:attr:`ValuationTracker.registry`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import EcovalError
from ecoval_ops.reporting.night import PastRun
from ecoval_ops.tracking.registry import ModelRegistry
from ecoval_ops.tracking.store import MlflowStore, store_lock

if TYPE_CHECKING:
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = ["DESCRIPTION_TAG", "OWNER_TAG", "Shard", "TableInput", "ValuationTracker"]

OWNER_TAG = "ecoval.owner"
"""Tag of a parent run opened outside an orchestrator: the process that opened it."""
DESCRIPTION_TAG = "mlflow.note.content"
"""The tag MLflow's UI shows as a run's description (Markdown)."""


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


class ValuationTracker(MlflowStore):
    """Writes one valuation run to MLflow.

    Args:
        tracking_uri: MLflow tracking URI (a SQLite file by default in the CLI).
        experiment: experiment name, created when missing.
    """

    @property
    def registry(self) -> ModelRegistry:
        """The model registry of the same store."""
        return ModelRegistry(self.tracking_uri, self.experiment)

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
            with store_lock(self.tracking_uri):
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
        with store_lock(self.tracking_uri):
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

    def review_plots(self, run_id: str) -> dict[str, bytes]:
        """The PNGs a run logged under ``review/``; empty when the store or the run is unreachable."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            names = [f.path for f in client.list_artifacts(run_id, "review") if f.path.endswith(".png")]
            with tempfile.TemporaryDirectory() as tmp:
                return {Path(n).name: Path(client.download_artifacts(run_id, n, tmp)).read_bytes() for n in names}
        except (MlflowException, OSError):
            return {}

    def removal_curve(self, run_ids: list[str]) -> RemovalCurve | None:
        """The removal curve of the latest of ``run_ids`` that logged one (a refit); None when none did."""
        from mlflow.exceptions import MlflowException

        from ecoval_ops.reporting.pages import REMOVAL_FILE, saved_curve

        client = self._client()
        try:
            runs = sorted((client.get_run(r) for r in run_ids), key=lambda run: -run.info.start_time)
            for run in runs:
                if any(f.path.endswith(REMOVAL_FILE) for f in client.list_artifacts(run.info.run_id, "review")):
                    with tempfile.TemporaryDirectory() as tmp:
                        path = client.download_artifacts(run.info.run_id, f"review/{REMOVAL_FILE}", tmp)
                        return saved_curve(Path(path))
        except (MlflowException, OSError):
            return None
        return None
