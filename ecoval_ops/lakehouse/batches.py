"""One pass over a table's rows, written once for both engines: map Arrow batches, merge small partials.

A :class:`BatchPass` maps each Arrow record batch of the columns it reads to a *partial*: a small
Arrow table of a fixed schema (O(classes), O(p) or O(bins) rows, never O(rows)). Partials merge
associatively, so an engine may merge them in any grouping: the delta-rs engine streams the
table's batches in-process (:func:`run_local`, bounded memory), the Spark engine maps them on
the executors with ``mapInArrow``, merges each partition's partials there and collects one per
partition (:func:`run_spark`). The driver then turns the merged partial into the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["BATCH_ROWS", "BatchPass", "merge_all", "run_local", "run_spark"]

R_co = TypeVar("R_co", covariant=True)

BATCH_ROWS = 65_536
"""Rows per batch of an in-process pass (bounds its memory)."""


class BatchPass(Protocol[R_co]):
    """A pass: which columns it reads, how a batch becomes a partial, how partials merge and finish."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns each batch holds (in this order)."""
        ...

    def partial_schema(self) -> pa.Schema:
        """The schema of every partial."""
        ...

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """The partial of one batch."""
        ...

    def merge(self, partials: pa.Table) -> pa.Table:
        """One partial from the concatenation of several."""
        ...

    def finish(self, partial: pa.Table) -> R_co:
        """The result from the partial of every row."""
        ...


def merge_all(step: BatchPass[object], batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """The merged partial of ``batches`` (the empty partial when there are none)."""
    import pyarrow as pa

    parts = [step.map(b) for b in batches if b.num_rows]
    schema = step.partial_schema()
    merged = pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()
    return step.merge(merged)


def run_local(step: BatchPass[R_co], batches: Iterable[pa.RecordBatch]) -> R_co:
    """Run ``step`` in-process over ``batches`` (a dataset scan's, so memory stays bounded)."""
    return step.finish(merge_all(step, batches))


def run_spark(step: BatchPass[R_co], frame: DataFrame) -> R_co:
    """Run ``step`` on the executors over ``frame``; the driver collects one partial per partition."""
    from pyspark.sql.pandas.types import from_arrow_schema

    def partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from merge_all(step, batches).to_batches()

    schema = step.partial_schema()
    partials = frame.select(*step.columns).mapInArrow(partition, from_arrow_schema(schema)).toArrow()
    return step.finish(step.merge(partials.cast(schema)))
