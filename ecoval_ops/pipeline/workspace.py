"""Where the steps of a run leave what the next step reads (steps pass references, not data).

A workspace sits beside its source table, on the same storage: ``<parent>/_ecoval/<table name>/``
for ``/data/train`` as for ``s3://lake/train`` (``s3://lake/_ecoval/train/``), unless
``staging_dir`` names another folder or prefix. So every task of a distributed run, and every
Spark executor, reaches it wherever it runs::

    embeddings_<fingerprint>/   Delta table: key -> embedding, appended as rows arrive
    runs/<run id>/plan/         the TrainingPlan (arrays + JSON)
    runs/<run id>/shards/<i>.npz  utilities of shard i (a retried shard reuses it)
    runs/<run id>/model/        the fitted valuation state (arrays + JSON)
    runs/<run id>/inputs/       every row's inputs of the row pass (Parquet), written by the engine
    runs/<run id>/values/       the value columns of the run (Parquet), read by the MERGE

A killed task never leaves a part that a retry would trust: locally a part is written under a
temporary name and renamed; in an object store a folder counts once its marker is written
(:mod:`ecoval_ops.files`). A run's folder is removed once its values are committed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ecoval_ops import files
from ecoval_ops.config import RunConfig
from ecoval_ops.storage import TableRef

__all__ = ["Workspace"]

T = TypeVar("T")


@dataclass(frozen=True)
class Workspace:
    """The staging folders of one source table.

    Attributes:
        root: the workspace's folder or object-store prefix, with the table's storage options.
    """

    root: TableRef

    @classmethod
    def for_config(cls, cfg: RunConfig) -> Workspace:
        """The workspace of ``cfg.source.table``: ``cfg.staging_dir``, else ``<parent>/_ecoval/<name>``."""
        return cls.for_table(cfg.source.table, cfg.staging_dir)

    @classmethod
    def for_table(cls, table: TableRef, staging_dir: TableRef | None = None) -> Workspace:
        """The workspace of ``table`` (see :meth:`for_config`)."""
        return cls(staging_dir if staging_dir is not None else table.parent / "_ecoval" / table.name)

    def embeddings(self, fingerprint: str, *, validation: bool = False) -> TableRef:
        """The embeddings table of one embedder (and of the validation table when asked)."""
        return self.root / f"{'validation_' if validation else ''}embeddings_{fingerprint}"

    def run(self, run_id: str) -> TableRef:
        """The folder of one run."""
        return self.root / "runs" / run_id

    def plan(self, run_id: str) -> TableRef:
        """The run's training plan folder."""
        return self.run(run_id) / "plan"

    def shard(self, run_id: str, index: int) -> TableRef:
        """The utilities of shard ``index``."""
        return self.run(run_id) / "shards" / f"{index}.npz"

    def model(self, run_id: str) -> TableRef:
        """The run's fitted valuation state."""
        return self.run(run_id) / "model"

    def reference_model(self, run_id: str) -> TableRef:
        """The state fitted on the reference rows, before the centring over every row."""
        return self.run(run_id) / "reference_model"

    def centred_model(self, run_id: str) -> TableRef:
        """The state centred over every row, before it is registered."""
        return self.run(run_id) / "centred_model"

    def curve(self, run_id: str) -> TableRef:
        """The review's removal curve of a refit (JSON)."""
        return self.run(run_id) / "removal_curve.json"

    def inputs(self, run_id: str) -> TableRef:
        """Every row's inputs of the row pass (a folder of Parquet files)."""
        return self.run(run_id) / "inputs"

    def values(self, run_id: str) -> TableRef:
        """The run's value columns (a folder of Parquet files)."""
        return self.run(run_id) / "values"

    def remove_run(self, run_id: str) -> None:
        """Drop a finished run's folder."""
        files.remove(self.run(run_id))

    @staticmethod
    def exists(part: TableRef) -> bool:
        """Whether ``part`` was written whole (a retry trusts it)."""
        return files.exists(part)

    @staticmethod
    def read(part: TableRef, load: Callable[[Path], T]) -> T:
        """``load`` on a local path holding ``part`` (the part itself, or a copy fetched for the call)."""
        return files.read(part, load)

    @staticmethod
    @contextmanager
    def atomic(part: TableRef) -> Iterator[Path]:
        """Yield a local temporary path to write ``part`` to; it becomes ``part`` when the block ends.

        Works for files and folders; an existing ``part`` is replaced.
        """
        if part.is_local:
            with files.renamed_into(Path(part.uri)) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="ecoval-") as folder:
            tmp = Path(folder) / part.name
            yield tmp
            files.upload(tmp, part)

    @staticmethod
    @contextmanager
    def output(part: TableRef) -> Iterator[TableRef]:
        """Yield where an engine writes the folder ``part`` in place; it counts once the block ends.

        Locally a temporary folder renamed to ``part``; in an object store ``part`` itself, emptied
        first and marked done last.
        """
        if part.is_local:
            with files.renamed_into(Path(part.uri)) as tmp:
                tmp.mkdir()
                yield TableRef.of(tmp)
            return
        files.remove(part)
        yield part
        files.mark_done(part)
