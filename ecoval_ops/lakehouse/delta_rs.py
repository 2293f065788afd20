"""Value columns on a Delta table through delta-rs: schema evolution and the MERGE (step 6).

The value columns are added once by a schema change, then each run commits exactly one MERGE
under the contract of :mod:`ecoval_ops.lakehouse.value_writes` (idempotent, watermarked,
value columns only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecoval_ops.exceptions import InvalidInputError, MissingColumnError
from ecoval_ops.identifiers import quote_identifier
from ecoval_ops.lakehouse.columns import LABEL_TYPE, VALUE_COLUMNS, value_schema
from ecoval_ops.lakehouse.tables import TableLike, open_table, table_exists, write_table
from ecoval_ops.lakehouse.value_writes import (
    RUN_KEY,
    WATERMARK_KEY,
    app_id,
    merge_once,
    prepare_values,
    retry_conflicts,
    value_updates,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

__all__ = ["create_values_table", "ensure_value_columns", "merge_values"]


def ensure_value_columns(path: TableLike, *, label: str | None = None) -> int | None:
    """Add the value columns the table lacks, in one schema-change commit.

    A concurrent commit (another run adding them at the same moment) is retried against the
    new version, where the columns may then already be there.

    Args:
        path: the table.
        label: its label column, whose type ``ecoval_suggested_label`` takes; None adds every
            value column but that one.

    Returns:
        The committed version, or None when every value column was already there.

    Raises:
        InvalidInputError: a column of that name exists with another type.
        MissingColumnError: no column ``label``.
    """
    from deltalake.exceptions import CommitFailedError
    from deltalake.schema import Field, PrimitiveType

    def add() -> int | None:
        table = open_table(path)
        present = {f.name: f for f in table.schema().fields}
        if label is not None and label not in present:
            raise MissingColumnError(f"{path} has no label column {label!r}")
        missing = []
        for name, delta_type in VALUE_COLUMNS.items():
            if delta_type == LABEL_TYPE:
                if label is None:
                    continue
                delta_type = _type_name(present[label].type)
            if name in present:
                found = _type_name(present[name].type)
                if found not in (delta_type, "timestamp_ntz" if delta_type == "timestamp" else delta_type):
                    raise InvalidInputError(
                        f"column {name!r} of {path} has type {found}; the value column needs {delta_type}"
                    )
                continue
            missing.append(Field(name, PrimitiveType(delta_type), nullable=True))
        if not missing:
            return None
        table.alter.add_columns(missing)
        return int(open_table(path).version())

    return retry_conflicts(path, CommitFailedError, add, what="adding the value columns")


def _type_name(delta_type: object) -> str:
    return str(getattr(delta_type, "type", delta_type))


def merge_values(
    path: TableLike, values: pa.Table, *, key: str, run_id: str, source_version: int, insert: bool = False
) -> int | None:
    """Write one run's values with a single MERGE on ``key``; a no-op if the run already did.

    Args:
        path: the Delta table, which must already have the value columns.
        values: the key column and any value columns, one row per valued key.
        key: the row-key column (a plain identifier).
        run_id: the run writing the values; its transaction makes the MERGE idempotent.
        source_version: the table version whose rows were valued (the new watermark).
        insert: add rows for keys the table lacks (a separate values table); the source table
            never gains rows.

    Returns:
        The committed version, or None when this run's MERGE had committed before.

    Raises:
        InvalidInputError: see :func:`prepare_values`; nothing is written then.
    """
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import CommitFailedError

    def merge(table: DeltaTable) -> None:
        source = prepare_values(table, path, values, key=key, insert=insert)
        q_key = quote_identifier(key, "key column")
        merger = table.merge(
            source,
            predicate=f"t.{q_key} = s.{q_key}",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(
                custom_metadata={WATERMARK_KEY: str(source_version), RUN_KEY: run_id},
                app_transactions=[Transaction(app_id(run_id), 1)],
            ),
        ).when_matched_update(updates=value_updates(source.column_names, key))
        (merger.when_not_matched_insert_all() if insert else merger).execute()

    return merge_once(path, run_id=run_id, conflict=CommitFailedError, merge=merge)


def create_values_table(path: TableLike, *, source: TableLike, key: str, label: str) -> None:
    """Create the separate values table of ``source`` (its key, then every value column) if missing.

    The key and ``ecoval_suggested_label`` take the types of the source's key and label
    columns. Concurrent creators are harmless: the first commit wins, the others do nothing.

    Raises:
        MissingColumnError: the source has no such key or label column.
    """
    import pyarrow as pa

    if table_exists(path):
        return
    schema = pa.schema(open_table(source).schema().to_arrow())
    for column in (key, label):
        if column not in schema.names:
            raise MissingColumnError(f"{source} has no column {column!r}")
    fields = [schema.field(key).with_nullable(False), *value_schema(schema.field(label).type)]
    write_table(path, pa.table({f.name: pa.array([], f.type) for f in fields}, schema=pa.schema(fields)), mode="ignore")
