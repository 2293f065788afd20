"""What an engine is: the Protocol both engines satisfy, and what they share (architecture.md).

An engine owns every pass over a run's rows: the source checks, the new rows, the drift counts,
the embeddings, the reference draw, the two row passes and the MERGE. The steps
(:mod:`ecoval_ops.pipeline.steps`) call an engine and never read a table's rows themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.config import RunConfig
from ecoval_ops.lakehouse import ensure_value_columns
from ecoval_ops.lakehouse.delta_rs import create_values_table
from ecoval_ops.lakehouse.tables import TableLike
from ecoval_ops.process import fault_point
from ecoval_ops.storage import TableRef

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.lakehouse.checks import NewRows, SourceCheck
    from ecoval_ops.lakehouse.embedders import Embedder
    from ecoval_ops.lakehouse.source import Rows, RowSource, SourceColumns
    from ecoval_ops.lakehouse.summary import ValueSummary
    from ecoval_ops.valuation import EcoVal, TrainingPlan
    from ecoval_ops.valuation.clustering import ClusterAssigner
    from ecoval_ops.valuation.protocols import Clusterer

__all__ = ["Engine", "RunRows", "value_target"]


class RunRows(Protocol):
    """What an engine reads of a pinned run (:class:`~ecoval_ops.pipeline.pinned.PinnedRun`)."""

    @property
    def config(self) -> RunConfig:
        """The resolved configuration."""
        ...

    @property
    def table_version(self) -> int:
        """The source version the run values."""
        ...

    @property
    def valued(self) -> pa.Array | None:
        """The keys the values table held when the run was pinned; None without one."""
        ...

    @property
    def row_source(self) -> RowSource:
        """Where the run's rows lie and how they are split."""
        ...

    @property
    def validation_source(self) -> RowSource | None:
        """Where the validation table's rows lie; None when rows of the source are held out."""
        ...

    def rows(self, *, only_new: bool = False) -> Rows:
        """The pinned version's rows, read in-process."""
        ...

    def validation_rows(self) -> Rows | None:
        """The validation table's rows; None when rows of the source are held out."""
        ...

    def estimator(self, clusterer: Clusterer | None = None) -> EcoVal:
        """An unfitted EcoVal with the run's settings."""
        ...


def value_target(cfg: RunConfig) -> tuple[TableRef, bool]:
    """The table the values go to, made ready, and whether its MERGE inserts new keys.

    The source table gains the value columns once (a schema change); a separate values table
    (``values_table``) is created with the key and the value columns, and rows are upserted
    into it, so the source is never altered.
    """
    if cfg.source.values_table is not None:
        create_values_table(
            cfg.source.values_table, source=cfg.source.table, key=cfg.source.key, label=cfg.source.label
        )
        return cfg.source.values_table, True
    ensure_value_columns(cfg.source.table, label=cfg.source.label)
    fault_point("columns_added")
    return cfg.source.table, False


class Engine(Protocol):
    """Embeds rows, draws the plan's reference set, runs the row passes, writes values."""

    def close(self) -> None:
        """Release what the engine holds outside this process (a Spark Connect server's session)."""
        ...

    def summarise(self, run: RunRows, values: TableRef, *, top: int) -> ValueSummary | None:
        """The summary of a run's values (Parquet in ``values``, with ``ecoval_new``); None for no rows.

        ``top`` rows at each end of the ranking are kept (:func:`~ecoval_ops.lakehouse.summary.summarise`).
        """
        ...

    def embed(self, cfg: RunConfig, source: TableLike, version: int, embedder: Embedder, target: TableLike) -> int:
        """Append embeddings of the rows of ``source@version`` missing from ``target``; rows embedded.

        Idempotent per source version: a retried call commits nothing.
        """
        ...

    def check_source(
        self, columns: SourceColumns, path: TableLike, version: int, *, fraction: float | None
    ) -> SourceCheck:
        """Check a source version's columns, keys and labels; count its rows, labels and held-out rows.

        Raises:
            MissingColumnError, InvalidInputError, DuplicateKeyError: see
                :func:`~ecoval_ops.lakehouse.source_checks.check_source`.
        """
        ...

    def new_rows(self, run: RunRows) -> NewRows:
        """How many rows of the pinned version no run has valued, and a digest of their keys."""
        ...

    def new_cluster_counts(self, run: RunRows, assign: ClusterAssigner) -> NDArray[np.int64]:
        """``(p,)`` rows per cluster, by ``assign``, of the rows no run has valued (the drift test)."""
        ...

    def plan(self, run: RunRows) -> tuple[TrainingPlan, pa.Array]:
        """Stage 0 and the training plan of a refit on the pinned training rows; the members' keys.

        The keys are in member order, of the key column's own Arrow type.

        Raises:
            InvalidInputError: bad rows, or every row held out.
        """
        ...

    def row_inputs(self, run: RunRows, model: TableRef, out: TableRef, *, only_new: bool) -> NDArray[np.float64]:
        """Write every row's inputs against the saved ``model`` as Parquet files in ``out`` (first pass).

        A refit's rows are every row of the pinned version (training rows may be members);
        ``only_new`` takes the rows no run has valued, none of them a member.

        Returns:
            ``(p,)`` sums of ``x_i`` over the training rows per cluster (what centres a refit).
        """
        ...

    def values(
        self, run: RunRows, inputs: TableRef, model: TableRef, out: TableRef, *, run_id: str, model_version: str
    ) -> None:
        """Write the value columns of the ``inputs`` against the (centred) ``model`` as Parquet in ``out``."""
        ...

    def write_values(self, cfg: RunConfig, values: TableRef, *, run_id: str, source_version: int) -> int | None:
        """Add the value columns once, then one idempotent MERGE of the Parquet ``values``; None if done."""
        ...
