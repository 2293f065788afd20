"""The passes of ``detect`` and ``decide``, one definition for both engines (:mod:`ecoval_ops.lakehouse.batches`).

- :class:`SourcePass`: rows, null keys and labels, rows per label, rows held out (the key hash of
  :func:`~ecoval_ops.valuation.reference.holdout_mask`); :func:`check_counts` raises on bad ones;
- :class:`NewRowsPass`: how many rows no run has valued, and an order-free digest of their keys;
- :class:`ClusterCountPass`: rows per cluster of the current model (the drift test).

Duplicate keys need every key at once, so each engine finds them its own way (a shuffle on
Spark, sorted key hashes in-process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import DuplicateKeyError, InvalidInputError
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.valuation.reference import holdout_mask, key_hash

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from ecoval_ops.valuation.clustering import ClusterAssigner

__all__ = [
    "DIGEST_HASH_KEY",
    "ClusterCountPass",
    "NewRows",
    "NewRowsPass",
    "SourceCheck",
    "SourcePass",
    "check_counts",
    "check_duplicates",
    "list_matrix",
    "local_duplicates",
]

DIGEST_HASH_KEY = "ecoval-digest-01"
"""The hash key of the new rows' digest (a content digest, not a draw)."""


@dataclass(frozen=True)
class SourceCheck:
    """What one pass over a source version's key and label finds.

    Attributes:
        rows: rows in the version.
        key_nulls: rows with a null key.
        label_nulls: rows with a null label.
        labels: the distinct labels (``label``) and their rows (``rows``), nulls excluded.
        held_out: rows the hold-out split takes (0 without a validation fraction).
    """

    rows: int
    key_nulls: int
    label_nulls: int
    labels: pa.Table
    held_out: int


@dataclass(frozen=True)
class SourcePass:
    """Rows, nulls, rows per label and rows held out, of the key and label columns."""

    key: str
    label: str
    label_type: pa.DataType
    fraction: float | None

    @property
    def columns(self) -> tuple[str, ...]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return (self.key, self.label)

    def partial_schema(self) -> pa.Schema:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        counts = [pa.field(name, pa.int64()) for name in ("rows", "key_nulls", "held_out")]
        return pa.schema([pa.field(self.label, self.label_type), *counts])

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        keys = batch.column(self.key)
        valid = np.asarray(keys.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        held = np.zeros(batch.num_rows, dtype=bool)
        if self.fraction is not None and valid.any():
            held[valid] = holdout_mask(keys.filter(pa.array(valid)).to_numpy(zero_copy_only=False), self.fraction)
        table = pa.table(
            {
                self.label: batch.column(self.label).cast(self.label_type),
                "rows": np.ones(batch.num_rows, np.int64),
                "key_nulls": (~valid).astype(np.int64),
                "held_out": held.astype(np.int64),
            }
        )
        return self.merge(table)

    def merge(self, partials: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        sums = partials.group_by(self.label).aggregate([(c, "sum") for c in ("rows", "key_nulls", "held_out")])
        return sums.rename_columns([c.removesuffix("_sum") for c in sums.column_names]).select(
            self.partial_schema().names
        )

    def finish(self, partial: pa.Table) -> SourceCheck:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow.compute as pc

        def total(table: pa.Table, column: str) -> int:
            return int(pc.sum(table.column(column)).as_py() or 0)

        labelled = partial.filter(pc.is_valid(partial.column(self.label)))
        return SourceCheck(
            rows=total(partial, "rows"),
            key_nulls=total(partial, "key_nulls"),
            label_nulls=total(partial, "rows") - total(labelled, "rows"),
            labels=labelled.select([self.label, "rows"]).sort_by(self.label),
            held_out=total(partial, "held_out"),
        )


def check_counts(check: SourceCheck, *, key: str, label: str, where: str) -> None:
    """Raise on an empty version, null keys or null labels (before anything is written).

    Raises:
        InvalidInputError: naming the column and the table version.
    """
    if check.rows == 0:
        raise InvalidInputError(f"{where} is empty: there are no rows to value")
    for column, nulls in ((key, check.key_nulls), (label, check.label_nulls)):
        if nulls:
            raise InvalidInputError(f"column {column!r} of {where} has {nulls} null values")


def check_duplicates(duplicates: int, *, key: str, where: str) -> None:
    """Raise when the key column holds ``duplicates`` repeated keys (rows beyond each key's first).

    Raises:
        DuplicateKeyError: naming the column and the table version.
    """
    if duplicates:
        raise DuplicateKeyError(f"key column {key!r} of {where} has {duplicates} duplicate keys")


def local_duplicates(scan: ds.Dataset, key: str) -> int:
    """Repeated keys of a dataset without holding its keys: 8 bytes of hash per row, then exact.

    The keys' 64-bit hashes are sorted; only the keys whose hash repeats are read a second time
    and compared, so a hash collision never counts as a duplicate.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ecoval_ops.lakehouse.batches import BATCH_ROWS

    def hashed(batch: pa.RecordBatch) -> NDArray[np.uint64]:
        return key_hash(batch.column(key).to_numpy(zero_copy_only=False), DIGEST_HASH_KEY)

    batches = scan.to_batches(columns=[key], batch_size=BATCH_ROWS)
    hashes = np.sort(np.concatenate([hashed(b) for b in batches] or [np.zeros(0, np.uint64)]))
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if not repeated.size:
        return 0
    suspects = [
        b.column(key).filter(pa.array(np.isin(hashed(b), repeated)))
        for b in scan.to_batches(columns=[key], batch_size=BATCH_ROWS)
    ]
    keys = pa.chunked_array(suspects)
    return len(keys) - int(pc.count_distinct(keys).as_py())


@dataclass(frozen=True)
class NewRows:
    """The rows of a source version no run has valued.

    Attributes:
        rows: how many.
        digest: 16 hex digits, the same for the same keys in any order (MLflow's dataset digest).
    """

    rows: int
    digest: str


@dataclass(frozen=True)
class NewRowsPass:
    """Counts the rows of its batches and sums their keys' hashes (mod 2^64): order-free.

    The sum travels as a signed 64-bit integer (Spark has no unsigned type), the same bits.
    """

    key: str

    @property
    def columns(self) -> tuple[str, ...]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return (self.key,)

    def partial_schema(self) -> pa.Schema:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        return pa.schema([pa.field("rows", pa.int64()), pa.field("digest", pa.int64())])

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        hashed = key_hash(batch.column(self.key).to_numpy(zero_copy_only=False), DIGEST_HASH_KEY)
        return _digest_partial(batch.num_rows, hashed)

    def merge(self, partials: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        rows = int(np.sum(partials.column("rows").to_numpy(), dtype=np.int64))
        signed = np.asarray(partials.column("digest").to_numpy(), dtype=np.int64)
        return _digest_partial(rows, signed.view(np.uint64))

    def finish(self, partial: pa.Table) -> NewRows:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        digest = int(partial.column("digest")[0].as_py()) & 0xFFFFFFFFFFFFFFFF
        return NewRows(int(partial.column("rows")[0].as_py()), f"{digest:016x}")


def _digest_partial(rows: int, hashes: NDArray[np.uint64]) -> pa.Table:
    """The partial of :class:`NewRowsPass`: the rows and the hashes' sum mod 2^64, as signed bits."""
    import pyarrow as pa

    total = np.add.reduce(hashes, dtype=np.uint64) if hashes.size else np.uint64(0)
    signed = np.array([total], dtype=np.uint64).view(np.int64)
    return pa.table({"rows": pa.array([rows], pa.int64()), "digest": pa.array(signed, pa.int64())})


def list_matrix(column: pa.ChunkedArray | pa.Array) -> NDArray[np.float64]:
    """A list column of equal-length (checked) embeddings as an ``(m, d)`` float64 matrix."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(column) == 0:
        return np.zeros((0, 0))
    width = int(pc.list_value_length(column)[0].as_py())
    flat = pc.list_flatten(column).cast(pa.float64())
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(column), width)


@dataclass(frozen=True)
class ClusterCountPass:
    """Rows per cluster of a fitted model, from the embeddings (``ecoval_embedding``)."""

    assign: ClusterAssigner

    @property
    def columns(self) -> tuple[str, ...]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return (EMBEDDING_COL,)

    def partial_schema(self) -> pa.Schema:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        return pa.schema([pa.field("cluster", pa.int64()), pa.field("rows", pa.int64())])

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        clusters = self.assign(list_matrix(batch.column(EMBEDDING_COL)))
        p = self.assign.model.n_clusters
        return pa.table({"cluster": np.arange(p, dtype=np.int64), "rows": np.bincount(clusters, minlength=p)})

    def merge(self, partials: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        sums = partials.group_by("cluster").aggregate([("rows", "sum")])
        return sums.rename_columns([c.removesuffix("_sum") for c in sums.column_names]).select(["cluster", "rows"])

    def finish(self, partial: pa.Table) -> NDArray[np.int64]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        counts = np.zeros(self.assign.model.n_clusters, dtype=np.int64)
        np.add.at(counts, partial.column("cluster").to_numpy(), partial.column("rows").to_numpy())
        return counts
