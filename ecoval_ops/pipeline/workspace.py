"""Where the steps of a run leave what the next step reads (steps pass references, not data).

A workspace sits beside a local source table (``<parent>/_ecoval/<table name>/`` unless
``staging_dir`` says otherwise), on the same storage, so every task of a distributed run sees
it. For a table in an object store it is a local folder named after the table's URI
(``~/.cache/ecoval/<scheme>/<bucket>/<path>/``): the tasks of such a run share one host's
disk, or a ``staging_dir`` they all mount::

    embeddings_<fingerprint>/   Delta table: key -> embedding, appended as rows arrive
    runs/<run id>/plan/         the TrainingPlan (arrays + JSON)
    runs/<run id>/shards/<i>.npz  utilities of shard i (a retried shard reuses it)
    runs/<run id>/model/        the fitted valuation state (arrays + JSON)
    runs/<run id>/values/       the value columns of the run (Parquet), read by the MERGE

Files are written to a temporary name and renamed, so a killed task never leaves a partial file
that a retry would trust. A run's folder is removed once its values are committed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ecoval_ops.config import RunConfig
from ecoval_ops.storage import TableRef

__all__ = ["Workspace"]


@dataclass(frozen=True)
class Workspace:
    """The staging folders of one source table.

    Attributes:
        root: the workspace folder.
    """

    root: Path

    @classmethod
    def for_config(cls, cfg: RunConfig) -> Workspace:
        """The workspace of ``cfg.table``.

        ``cfg.staging_dir``, else ``<parent>/_ecoval/<name>`` for a local table and
        ``~/.cache/ecoval/<scheme>/<bucket>/<path>`` for one in an object store.
        """
        return cls.for_table(cfg.table, cfg.staging_dir)

    @classmethod
    def for_table(cls, table: TableRef, staging_dir: Path | None = None) -> Workspace:
        """The workspace of ``table`` (see :meth:`for_config`)."""
        if staging_dir is not None:
            return cls(staging_dir)
        if table.is_local:
            return cls(table.local_path.parent / "_ecoval" / table.name)
        return cls(Path.home() / ".cache" / "ecoval" / table.scheme / table.uri.split("://", 1)[1])

    def embeddings(self, fingerprint: str, *, validation: bool = False) -> Path:
        """The embeddings table of one embedder (and of the validation table when asked)."""
        return self.root / f"{'validation_' if validation else ''}embeddings_{fingerprint}"

    def run(self, run_id: str) -> Path:
        """The folder of one run."""
        return self.root / "runs" / run_id

    def plan(self, run_id: str) -> Path:
        """The run's training plan folder."""
        return self.run(run_id) / "plan"

    def shard(self, run_id: str, index: int) -> Path:
        """The utilities of shard ``index``."""
        return self.run(run_id) / "shards" / f"{index}.npz"

    def model(self, run_id: str) -> Path:
        """The run's fitted valuation state."""
        return self.run(run_id) / "model"

    def reference_model(self, run_id: str) -> Path:
        """The state fitted on the reference rows, before the centring over every row."""
        return self.run(run_id) / "reference_model"

    def centred_model(self, run_id: str) -> Path:
        """The state centred over every row, before it is registered."""
        return self.run(run_id) / "centred_model"

    def curve(self, run_id: str) -> Path:
        """The review's removal curve of a refit (JSON)."""
        return self.run(run_id) / "removal_curve.json"

    def inputs(self, run_id: str) -> Path:
        """Every row's inputs of the row pass (a folder of Parquet files)."""
        return self.run(run_id) / "inputs"

    def values(self, run_id: str) -> Path:
        """The run's value columns (a folder of Parquet files)."""
        return self.run(run_id) / "values"

    def remove_run(self, run_id: str) -> None:
        """Drop a finished run's folder."""
        shutil.rmtree(self.run(run_id), ignore_errors=True)

    @staticmethod
    @contextmanager
    def atomic(target: Path) -> Iterator[Path]:
        """Yield a temporary path beside ``target``; rename it to ``target`` when the block ends.

        Works for files and folders; an existing ``target`` is replaced.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
        try:
            yield tmp
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp.parent, ignore_errors=True)
