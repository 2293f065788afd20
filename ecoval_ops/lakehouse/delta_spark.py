"""The value-column MERGE through delta-spark (the Spark engine's writer).

Same contract as :func:`ecoval_ops.lakehouse.delta_rs.merge_values`: the schema of
``value_schema_for`` and the key checks of ``check_value_keys`` (run as Spark jobs, so no key
reaches the driver), one MERGE that updates value columns only (Spark SQL over a temporary view,
so it runs the same over Spark Connect; redone with back-off when a concurrent commit conflicts,
:func:`commit_conflicts`), made idempotent by Delta's
``spark.databricks.delta.write.txnAppId`` / ``txnVersion`` session confs (honoured by MERGE), and
the watermark as JSON in the commit's ``userMetadata``.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from ecoval_ops.files import parquet_dataset
from ecoval_ops.identifiers import quote_identifier
from ecoval_ops.lakehouse.columns import NEW_COL
from ecoval_ops.lakehouse.queries import table_ref
from ecoval_ops.lakehouse.tables import TableLike, spark_path
from ecoval_ops.lakehouse.value_writes import (
    RUN_KEY,
    WATERMARK_KEY,
    app_id,
    check_value_keys,
    merge_once,
    value_schema_for,
    value_updates,
)
from ecoval_ops.storage import TableRef

if TYPE_CHECKING:
    from deltalake import DeltaTable as DeltaRsTable
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["check_keys_spark", "commit_conflicts", "merge_sql", "merge_values_spark", "repeated_keys", "run_merge"]

_CONFS = (
    "spark.databricks.delta.write.txnAppId",
    "spark.databricks.delta.write.txnVersion",
    "spark.databricks.delta.commitInfo.userMetadata",
)


def commit_conflicts() -> tuple[type[Exception], ...]:
    """delta-spark's exceptions for a commit that lost to a concurrent one.

    In Python they are siblings, not subclasses of ``DeltaConcurrentModificationException``
    (a table created by two runs at once raises ``ProtocolChangedException``), so each is named.
    Over Spark Connect they arrive as subclasses of the same, once ``delta.connect.exceptions``
    has taught the client the server's class names.
    """
    import delta.connect.exceptions  # noqa: F401
    from delta import exceptions

    return tuple(getattr(exceptions, name) for name in exceptions.__all__)


def merge_values_spark(
    spark: SparkSession,
    path: TableLike,
    values: TableLike,
    *,
    key: str,
    run_id: str,
    source_version: int,
    insert: bool = False,
) -> int | None:
    """Write one run's values with a single delta-spark MERGE on ``key``; None if already done.

    Args:
        spark: the session.
        path: the Delta table, which must already have the value columns.
        values: a Parquet file or folder of the key and value columns (typed as
            :func:`~ecoval_ops.lakehouse.columns.value_schema`); Spark reads it directly.
        key: the row-key column.
        run_id: the run writing the values (the idempotent transaction).
        source_version: the table version whose rows were valued (the new watermark).
        insert: add rows for keys the table lacks (a separate values table).

    Raises:
        InvalidInputError, DuplicateKeyError: see :func:`~ecoval_ops.lakehouse.value_writes.value_schema_for`
            and :func:`check_keys_spark`.
    """
    import pyarrow as pa

    def merge(table: DeltaRsTable) -> None:
        target = pa.schema(table.schema().to_arrow())
        found = parquet_dataset(TableRef.of(values)).schema
        # The workspace's values carry the run's own NEW_COL, which no table receives.
        found = pa.schema([f for f in found if f.name != NEW_COL])
        written = value_schema_for(target, found, path, key=key, insert=insert)
        frame = spark.read.option("recursiveFileLookup", "true").parquet(spark_path(values)).select(*written.names)
        check_keys_spark(spark, frame, path, int(table.version()), key=key, insert=insert)
        run_merge(spark, path, frame, key=key, insert=insert, run_id=run_id, source_version=source_version)

    return merge_once(path, run_id=run_id, conflict=commit_conflicts(), merge=merge)


def run_merge(
    spark: SparkSession,
    path: TableLike,
    frame: DataFrame,
    *,
    key: str,
    insert: bool,
    run_id: str,
    source_version: int,
) -> None:
    """MERGE ``frame`` (the key and value columns) into ``path`` as run ``run_id``'s one transaction.

    The application transaction (``txnAppId`` = the run, ``txnVersion`` 1) makes a repeat of the
    same run's MERGE commit nothing, even when the run never learnt that the first one committed.
    """
    metadata = json.dumps({WATERMARK_KEY: str(source_version), RUN_KEY: run_id})
    for name, value in zip(_CONFS, (app_id(run_id), "1", metadata), strict=True):
        spark.conf.set(name, value)
    view = f"ecoval_values_{uuid.uuid4().hex}"
    frame.createOrReplaceTempView(view)
    try:
        spark.sql(merge_sql(path, view, frame.columns, key=key, insert=insert))
    finally:
        spark.catalog.dropTempView(view)
        for name in _CONFS:
            spark.conf.unset(name)


def merge_sql(path: TableLike, view: str, columns: list[str], *, key: str, insert: bool) -> str:
    """The MERGE of the view ``view``'s value ``columns`` into ``path`` on ``key``, as Spark SQL.

    SQL, not ``DeltaTable.merge``: it runs the same over Spark Connect, where Delta's Python API
    needs a server plugin that Maven Central does not serve.
    """
    q_key = quote_identifier(key, "key column")
    updates = ", ".join(f"t.{c} = {v}" for c, v in value_updates(columns, key).items())
    inserted = " WHEN NOT MATCHED THEN INSERT *" if insert else ""
    return (
        f"MERGE INTO {table_ref(path)} AS t USING {view} AS s ON t.{q_key} = s.{q_key} "
        f"WHEN MATCHED THEN UPDATE SET {updates}{inserted}"
    )


def check_keys_spark(
    spark: SparkSession, values: DataFrame, path: TableLike, version: int, *, key: str, insert: bool
) -> None:
    """:func:`~ecoval_ops.lakehouse.value_writes.check_value_keys` by Spark jobs: no key reaches the driver.

    Raises:
        See :func:`~ecoval_ops.lakehouse.value_writes.check_value_keys`.
    """
    q_key = quote_identifier(key, "key column")
    target = spark.read.format("delta").option("versionAsOf", version).load(spark_path(path)).select(q_key)
    check_value_keys(
        repeated_values=repeated_keys(values, q_key),
        repeated_target=repeated_keys(target, q_key),
        absent=0 if insert else values.select(q_key).join(target, on=key, how="left_anti").count(),
        key=key,
        where=f"{path}@v{version}",
        insert=insert,
    )


def repeated_keys(frame: DataFrame, key: str) -> int:
    """Rows of ``frame`` whose ``key`` repeats an earlier row's (a shuffle; no key reaches the driver)."""
    from pyspark.sql import functions as sf

    extra = frame.groupBy(key).count().agg(sf.sum(sf.col("count") - 1)).first()
    return int(extra[0] or 0) if extra is not None else 0
