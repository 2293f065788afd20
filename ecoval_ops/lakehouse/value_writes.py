"""The value-column write contract both writers share (architecture.md, step 6; style 12).

Every run commits exactly one MERGE keyed on the row key that updates only value columns,
carrying an application transaction ``ecoval-<run id>`` (so a retried run commits nothing) and
the watermark (the source version it valued) in its commit metadata. :func:`prepare_values`
holds the checks both writers run, so the Spark and the delta-rs MERGE refuse the same inputs;
:func:`merge_once` makes either writer's MERGE idempotent and redoes it after a concurrent
commit. Original columns are never in the update set and no row is inserted or deleted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ecoval_ops.exceptions import ConcurrentWriteError, DuplicateKeyError, InvalidInputError, MissingColumnError
from ecoval_ops.identifiers import check_identifier, quote_identifier
from ecoval_ops.lakehouse.columns import VALUE_COLUMNS
from ecoval_ops.lakehouse.tables import TableLike, open_table

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

__all__ = [
    "MERGE_ATTEMPTS",
    "MERGE_BACKOFF_S",
    "RUN_KEY",
    "WATERMARK_KEY",
    "Watermark",
    "app_id",
    "check_value_keys",
    "merge_once",
    "prepare_values",
    "read_watermark",
    "retry_conflicts",
    "value_schema_for",
    "value_updates",
]

_T = TypeVar("_T")

MERGE_ATTEMPTS = 5
"""Attempts of a commit when concurrent writers make it conflict."""
MERGE_BACKOFF_S = 0.5
"""First back-off after a conflict; doubled on each attempt, with jitter."""
WATERMARK_KEY = "ecoval.source_version"
RUN_KEY = "ecoval.run_id"


@dataclass(frozen=True)
class Watermark:
    """The last valuation committed to a table.

    Attributes:
        source_version: the table version whose rows that run valued.
        run_id: the run (MLflow run id) that wrote the values.
        table_version: the version its MERGE committed.
    """

    source_version: int
    run_id: str
    table_version: int


def app_id(run_id: str) -> str:
    """The Delta application-transaction id of a run's MERGE (the same for both engines)."""
    return f"ecoval-{run_id}"


def value_schema_for(
    target: pa.Schema, values: pa.Schema, path: TableLike, *, key: str, insert: bool = False
) -> pa.Schema:
    """The schema a run's values are written with: the key and value columns, typed as the table's.

    Metadata only: both writers call it before their row checks (:func:`check_value_keys`).
    ``path`` only names the table in messages; ``insert`` (a separate values table) types the
    key as the table's, since the MERGE inserts it.

    Raises:
        InvalidInputError: a bad identifier, unknown value columns, or value columns the table lacks.
        MissingColumnError: the table has no key column.
    """
    import pyarrow as pa

    check_identifier(key, "key column")
    columns = [c for c in values.names if c != key]
    unknown = sorted(set(columns) - set(VALUE_COLUMNS))
    if key not in values.names or unknown:
        raise InvalidInputError(f"values must hold the key {key!r} and value columns only; unknown: {unknown}")
    if key not in target.names:
        raise MissingColumnError(f"{path} has no key column {key!r}")
    lacking = [c for c in columns if c not in target.names]
    if lacking:
        raise InvalidInputError(f"{path} has no value column(s) {lacking}; add them first (ensure_value_columns)")
    key_field = target.field(key) if insert else values.field(key)
    return pa.schema([key_field, *(target.field(c).with_nullable(True) for c in columns)])


def check_value_keys(
    *, repeated_values: int, repeated_target: int, absent: int, key: str, where: str, insert: bool
) -> None:
    """Refuse a MERGE whose keys repeat on either side, or (updating in place) are not in the table.

    Args:
        repeated_values: keys of the values beyond each key's first.
        repeated_target: the same, in the table.
        absent: valued keys the table lacks.
        key: the key column.
        where: the table version, for messages.
        insert: whether the MERGE may insert keys (a separate values table).

    Raises:
        DuplicateKeyError: duplicate keys on either side.
        InvalidInputError: valued keys missing from the table (without ``insert``).
    """
    if repeated_values:
        raise DuplicateKeyError(f"values hold duplicate keys in {key!r}; each row is valued once")
    if repeated_target:
        raise DuplicateKeyError(f"{where} has duplicate values in key column {key!r}")
    if absent and not insert:
        raise InvalidInputError(f"{absent} valued keys are not in {where}; nothing was written")


def prepare_values(table: DeltaTable, path: TableLike, values: pa.Table, *, key: str, insert: bool = False) -> pa.Table:
    """Check a run's values against the opened table in-process and cast them to the value-column types.

    The table's keys are streamed batch by batch (its duplicates by
    :func:`~ecoval_ops.lakehouse.checks.local_duplicates`), never held at once.

    Raises:
        See :func:`value_schema_for` and :func:`check_value_keys`.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ecoval_ops.lakehouse.batches import BATCH_ROWS
    from ecoval_ops.lakehouse.checks import local_duplicates

    schema = value_schema_for(pa.schema(table.schema().to_arrow()), values.schema, path, key=key, insert=insert)
    scan = table.to_pyarrow_dataset()
    keys = values.column(key)
    found = np.zeros(len(keys), dtype=bool)
    for batch in scan.to_batches(columns=[key], batch_size=BATCH_ROWS):
        known = batch.column(key).cast(keys.type)
        found |= np.asarray(pc.is_in(keys, value_set=known).to_numpy(zero_copy_only=False), dtype=bool)
    check_value_keys(
        repeated_values=values.num_rows - int(pc.count_distinct(keys).as_py()),
        repeated_target=local_duplicates(scan, key),
        absent=int((~found).sum()),
        key=key,
        where=f"{path}@v{table.version()}",
        insert=insert,
    )
    return values.select(schema.names).cast(schema)


def value_updates(columns: list[str], key: str) -> dict[str, str]:
    """The MERGE's update set: each value column from the source alias ``s`` (never the key)."""
    return {
        quote_identifier(c, "value column"): f"s.{quote_identifier(c, 'value column')}" for c in columns if c != key
    }


def merge_once(
    path: TableLike,
    *,
    run_id: str,
    conflict: type[Exception] | tuple[type[Exception], ...],
    merge: Callable[[DeltaTable], None],
) -> int | None:
    """Run a writer's MERGE once per run: skipped when committed before, redone after conflicts.

    Args:
        path: the table.
        run_id: the run; its application transaction marks the MERGE as committed.
        conflict: the writer's exception(s) for a concurrent commit.
        merge: commits the MERGE against the table version it is given.

    Returns:
        The committed version, or None when this run's MERGE had committed before.
    """

    def attempt() -> int | None:
        table = open_table(path)
        if table.transaction_version(app_id(run_id)) is not None:
            return None
        merge(table)
        return int(open_table(path).version())

    return retry_conflicts(path, conflict, attempt, what="the value MERGE")


def retry_conflicts(
    path: TableLike,
    conflict: type[Exception] | tuple[type[Exception], ...],
    commit: Callable[[], _T],
    *,
    what: str,
) -> _T:
    """Call ``commit`` until no concurrent commit to ``path`` conflicts with it.

    Every Delta commit of a run (embeddings append, column add, MERGE, on either engine) goes
    through here: another writer committed between our read and our commit (Delta's optimistic
    concurrency), so ``commit`` reads the table again and redoes its work against the new
    version, where it may find the work done.

    Args:
        path: the table, for messages.
        conflict: the writer's exception(s) for a concurrent commit.
        commit: reads the table and commits; called again after each conflict.
        what: the commit, for the message when attempts run out.

    Raises:
        ConcurrentWriteError: the table kept changing for :data:`MERGE_ATTEMPTS` attempts.
    """
    import random
    import time

    attempt = 0
    while True:
        try:
            return commit()
        except conflict as e:
            attempt += 1
            if attempt >= MERGE_ATTEMPTS:
                raise ConcurrentWriteError(
                    f"{path} changed under {MERGE_ATTEMPTS} attempts of {what} (concurrent writers); "
                    f"nothing was written, run again: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                ) from e
            time.sleep(MERGE_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random()))


def read_watermark(path: TableLike) -> Watermark | None:
    """The newest committed valuation of the table, from its commit history; None if never valued.

    delta-rs writes the watermark as custom commit metadata, delta-spark as JSON in
    ``userMetadata``; both are read.
    """
    for commit in open_table(path).history():
        metadata = dict(commit)
        if isinstance(commit.get("userMetadata"), str):
            with contextlib.suppress(ValueError):
                metadata.update(json.loads(commit["userMetadata"]))
        if WATERMARK_KEY in metadata:
            return Watermark(
                source_version=int(metadata[WATERMARK_KEY]),
                run_id=str(metadata.get(RUN_KEY, "")),
                table_version=int(commit["version"]),
            )
    return None
