"""Ready-to-run SQL over the value columns, and the clean / suspect views.

Downstream jobs act on values with SQL. The queries are Spark SQL over the table's path
(``delta.`<path>```); the same predicates work in delta-rs's ``QueryBuilder`` over a registered
table. One definition of "clean" and "suspect" lives here; the demo and the reports use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import check_identifier, check_token, quote_identifier
from ecoval_ops.lakehouse.columns import VALUE_COLUMNS
from ecoval_ops.lakehouse.tables import TableLike, spark_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "CLEAN_PREDICATE",
    "SUSPECT_PREDICATE",
    "create_views",
    "joined_ref",
    "ready_queries",
    "table_ref",
    "view_names",
]

CLEAN_PREDICATE = "ecoval_value > 0 AND NOT ecoval_suspect"
"""Rows that help the model and whose label agrees with their most similar rows."""
SUSPECT_PREDICATE = "ecoval_suspect"
"""Rows whose vote supports another label well above their own (``ValuationResult.suspect``)."""


def table_ref(path: TableLike) -> str:
    """The Spark SQL reference of a path-based Delta table (``s3://`` as Spark reads it, ``s3a://``).

    Raises:
        InvalidInputError: the path holds a back-quote, which would end the quoted reference.
    """
    text = spark_path(path)
    if "`" in text:
        raise InvalidInputError(f"table path {text!r} holds a back-quote, which Spark SQL cannot quote")
    return f"delta.`{text}`"


def joined_ref(source: str | Path, values: str | Path, key: str) -> str:
    """The source rows with their value columns from a separate values table, joined on ``key``.

    A LEFT JOIN: rows not valued yet carry NULL values, as in a source table with the columns.
    """
    k = quote_identifier(key, "key column")
    columns = ", ".join(f"v.{quote_identifier(c, 'value column')}" for c in VALUE_COLUMNS)
    return (
        f"(SELECT s.*, {columns} FROM {table_ref(source)} s LEFT JOIN {table_ref(values)} v ON s.{k} = v.{k}) AS valued"
    )


def ready_queries(
    path: str | Path, *, run_id: str | None = None, values: str | Path | None = None, key: str | None = None
) -> dict[str, str]:
    """Named queries a reviewer or a downstream job runs as they are.

    Args:
        path: the source table.
        run_id: add the query of the rows this run valued.
        values: a separate values table (with ``key``): the queries run over the join.
        key: the key column joining ``values``.
    """
    if values is not None and key is None:
        raise InvalidInputError("a values table is joined on the key column: give --key")
    t = joined_ref(path, values, key or "") if values is not None else table_ref(path)
    queries = {} if values is None else {"the source rows with their value columns": f"SELECT * FROM {t}"}
    queries |= {
        "clean rows (keep for training)": f"SELECT * FROM {t} WHERE {CLEAN_PREDICATE}",
        "suspect rows (review the labels), lowest value first": (
            f"SELECT * FROM {t} WHERE {SUSPECT_PREDICATE} ORDER BY ecoval_value"
        ),
        "lowest 5% by value": f"SELECT * FROM {t} WHERE ecoval_percentile < 0.05 ORDER BY ecoval_value",
        "clusters by value": (
            "SELECT ecoval_cluster, count(*) AS rows, first(ecoval_cluster_value) AS phi, avg(ecoval_value) AS "
            f"mean_value, avg(CAST(ecoval_suspect AS DOUBLE)) AS suspect_share FROM {t} WHERE ecoval_value IS NOT "
            "NULL GROUP BY ecoval_cluster ORDER BY phi DESC"
        ),
        "rows not valued yet": f"SELECT * FROM {t} WHERE ecoval_value IS NULL",
    }
    if run_id is not None:
        check_token(run_id, "run id")
        queries[f"rows valued by run {run_id}"] = f"SELECT * FROM {t} WHERE ecoval_run_id = '{run_id}'"
    return queries


def view_names(name: str) -> tuple[str, str]:
    """``<name>_ecoval_clean`` and ``<name>_ecoval_suspect``, ``name`` checked as an identifier."""
    check_identifier(name, "view name prefix")
    return f"{name}_ecoval_clean", f"{name}_ecoval_suspect"


def create_views(
    spark: SparkSession, path: str | Path, name: str, *, values: str | Path | None = None, key: str | None = None
) -> dict[str, int]:
    """Create (or replace) the clean and suspect views in the session's catalog.

    The views read the table at query time, so they follow the values of later runs. With a
    persistent metastore they outlive the session; with Spark's in-memory catalog they last as
    long as it. With a separate values table, ``<name>_ecoval_valued`` joins it to the source
    first, and the clean and suspect views read that join.

    Returns:
        Each view's name and its row count now.
    """
    clean, suspect = view_names(name)
    t = table_ref(path)
    counts = {}
    if values is not None:
        if key is None:
            raise InvalidInputError("a values table is joined on the key column: give --key")
        t = f"{name}_ecoval_valued"
        spark.sql(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM {joined_ref(path, values, key)}")
        counts[t] = int(spark.table(t).count())
    for view, predicate in ((clean, CLEAN_PREDICATE), (suspect, SUSPECT_PREDICATE)):
        spark.sql(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {t} WHERE {predicate}")
        counts[view] = int(spark.table(view).count())
    return counts
