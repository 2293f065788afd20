"""The in-process engine: delta-rs reads and writes, numpy/torch compute, no JVM (architecture.md).

The checks stream the table's Arrow batches through the passes of
:mod:`ecoval_ops.lakehouse.checks`; the fit reads the run's rows into numpy, sorted by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.engines.base import RunRows, value_target
from ecoval_ops.engines.rows import input_batch, value_batch, x_sums
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.files import parquet_dataset, read, write_parquet
from ecoval_ops.lakehouse import merge_values, open_table
from ecoval_ops.lakehouse.batches import BATCH_ROWS, BatchPass, run_local
from ecoval_ops.lakehouse.checks import ClusterCountPass, NewRows, NewRowsPass, SourceCheck
from ecoval_ops.lakehouse.columns import EMBEDDING_COL, NEW_COL
from ecoval_ops.lakehouse.embeddings import append_embeddings, embed_once, embedded_keys
from ecoval_ops.lakehouse.source import Rows, unvalued_batches
from ecoval_ops.lakehouse.source_checks import check_source
from ecoval_ops.lakehouse.summary import TopRowsPass, ValueSummary, summarise
from ecoval_ops.lakehouse.tables import TableLike
from ecoval_ops.valuation.reference import key_draws, member_index, smallest_draws

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.config import RunConfig
    from ecoval_ops.lakehouse.embedders import Embedder
    from ecoval_ops.lakehouse.source import SourceColumns
    from ecoval_ops.storage import TableRef
    from ecoval_ops.valuation import TrainingPlan
    from ecoval_ops.valuation.clustering import ClusterAssigner

__all__ = ["EMBED_ROWS", "DeltaRsEngine"]

EMBED_ROWS = 4096
"""Rows per batch the embedder sees (bounds the memory of an image embedder)."""


def _new_mask(run: RunRows, keys: NDArray[np.generic]) -> NDArray[np.bool_]:
    """Which of ``keys`` no run had valued (in-process: the new keys are read once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = run.config.source.key
    new = [b.column(0) for b in unvalued_batches(run.config.source.table, run.table_version, [key], valued=run.valued)]
    if not new:
        return np.zeros(len(keys), bool)
    found = pc.is_in(pa.array(keys), value_set=pa.chunked_array(new).combine_chunks().cast(pa.array(keys).type))
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


class DeltaRsEngine:
    """In-process engine: delta-rs reads and writes, numpy/torch compute (no JVM)."""

    def close(self) -> None:
        """See :class:`Engine`: delta-rs holds nothing outside the process."""

    def embed(self, cfg: RunConfig, source: TableLike, version: int, embedder: Embedder, target: TableLike) -> int:
        """See :class:`Engine`: the source's batches are embedded and appended as a stream."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake.exceptions import CommitFailedError

        def append() -> int:
            done = embedded_keys(target, cfg.source.key)
            scan = open_table(source, version).to_pyarrow_dataset()
            schema = pa.schema([scan.schema.field(cfg.source.key), pa.field(EMBEDDING_COL, pa.list_(pa.float64()))])
            embedded, failed = [0], []

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    for batch in scan.to_batches(columns=[cfg.source.key, *embedder.columns], batch_size=EMBED_ROWS):
                        if done is not None:
                            batch = batch.filter(pc.invert(pc.is_in(batch.column(0).cast(done.type), value_set=done)))
                        if batch.num_rows:
                            embedded[0] += batch.num_rows
                            X = pa.array(list(embedder.embed(batch.to_pandas())), pa.list_(pa.float64()))
                            yield pa.record_batch([batch.column(0).cast(schema.field(0).type), X], schema=schema)
                except Exception as e:
                    failed.append(e)
                    raise

            try:
                append_embeddings(target, pa.RecordBatchReader.from_batches(schema, batches()), version)
            except Exception:
                # delta-rs wraps what the stream raised, and commits nothing: raise it as it was.
                if failed:
                    raise failed[0] from None
                raise
            return embedded[0]

        return embed_once(target, version, CommitFailedError, append)

    def check_source(
        self, columns: SourceColumns, path: TableLike, version: int, *, fraction: float | None
    ) -> SourceCheck:
        """See :class:`Engine`: the table's batches streamed in-process."""
        return check_source(columns, path, version, fraction=fraction)

    def new_rows(self, run: RunRows) -> NewRows:
        """See :class:`Engine`."""
        key = run.config.source.key
        return run_local(
            NewRowsPass(key), unvalued_batches(run.config.source.table, run.table_version, [key], valued=run.valued)
        )

    def new_cluster_counts(self, run: RunRows, assign: ClusterAssigner) -> NDArray[np.int64]:
        """See :class:`Engine`: on the new rows read in-process."""
        import pyarrow as pa

        X = run.rows(only_new=True).X
        batch = pa.record_batch({EMBEDDING_COL: pa.array(list(X), pa.list_(pa.float64()))})
        return run_local(ClusterCountPass(assign), [batch])

    def summarise(self, run: RunRows, values: TableRef, *, top: int) -> ValueSummary | None:
        """See :class:`Engine`: the Parquet batches streamed in-process."""
        scan = parquet_dataset(values)

        def over_batches(step: BatchPass[Any]) -> Any:
            return run_local(step, scan.to_batches(columns=list(step.columns), batch_size=BATCH_ROWS))

        key = run.config.source.key
        return summarise(over_batches, top=TopRowsPass(key, scan.schema.field(key).type, top), new=True)

    def plan(self, run: RunRows) -> tuple[TrainingPlan, pa.Array]:
        """See :class:`Engine`: :meth:`EcoVal.prepare` on the rows read into numpy."""
        import pyarrow as pa

        rows = run.rows()
        holdout = run.row_source.held_out(rows.keys)
        validation = run.validation_rows() or Rows(rows.version, rows.keys[holdout], rows.X[holdout], rows.y[holdout])
        scored = smallest_draws(key_draws(validation.keys, run.config.method.seed), run.config.source.validation_rows)
        X_val, y_val = validation.X[scored], validation.y[scored]
        train = ~holdout
        if not train.any():
            raise InvalidInputError(f"every row of {run.config.source.table} is held out; lower validation_fraction")
        keys = rows.keys[train]
        draws = key_draws(keys, run.config.method.seed)
        plan = run.estimator().prepare(rows.X[train], rows.y[train], X_val, y_val, draws=draws)
        members = keys[member_index(plan.reference_draws, draws) >= 0]
        return plan, pa.array(members, type=run.row_source.key_type())

    def row_inputs(self, run: RunRows, model: TableRef, out: TableRef, *, only_new: bool) -> NDArray[np.float64]:
        """See :class:`Engine`."""
        from ecoval_ops.valuation import EcoVal

        ev = read(model, EcoVal.load)
        # With only_new the read keeps the rows no run has valued, none of them a training row.
        rows = run.rows(only_new=only_new)
        training = np.zeros(len(rows.keys), bool) if only_new else ~run.row_source.held_out(rows.keys)
        if not len(rows.keys):
            return np.zeros(ev.n_clusters_)
        new = np.ones(len(rows.keys), bool) if only_new else _new_mask(run, rows.keys)
        inputs = input_batch(ev, rows.keys, rows.X, rows.y, training, new, key=run.config.source.key)
        write_parquet(inputs, out)
        return x_sums(inputs, ev.n_clusters_)

    def values(
        self, run: RunRows, inputs: TableRef, model: TableRef, out: TableRef, *, run_id: str, model_version: str
    ) -> None:
        """See :class:`Engine`."""
        from ecoval_ops.valuation import EcoVal

        ev = read(model, EcoVal.load)
        table = parquet_dataset(inputs).to_table()
        if table.num_rows:
            valued = value_batch(
                ev,
                table,
                key=run.config.source.key,
                run_id=run_id,
                model_version=model_version,
                valued_at=datetime.now(UTC),
            )
            write_parquet(valued, out)

    def write_values(self, cfg: RunConfig, values: TableRef, *, run_id: str, source_version: int) -> int | None:
        """See :class:`Engine`."""
        target, insert = value_target(cfg)
        written = parquet_dataset(values).to_table().drop_columns([NEW_COL])
        return merge_values(
            target, written, key=cfg.source.key, run_id=run_id, source_version=source_version, insert=insert
        )
