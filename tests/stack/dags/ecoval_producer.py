"""A producer of training rows for the stack tests: appends a Parquet file's rows to the source table.

Its task declares the table's source asset as its outlet, as an ingestion job of a deployment
would, so the scheduler starts ``ecoval_nightly`` when new rows land.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import Asset, dag, get_current_context, task

from ecoval_ops.pipeline.catalog import source_uri

TABLE = os.environ["ECOVAL_TABLE"]


@dag(dag_id="ecoval_producer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["test"])
def ecoval_producer() -> None:
    @task(outlets=[Asset(source_uri(TABLE))])
    def append_rows() -> int:
        import pyarrow.parquet as pq
        from deltalake import write_deltalake

        rows = pq.read_table(get_current_context()["params"]["rows"])
        # The table holds value columns once valued: the new rows leave them null.
        write_deltalake(TABLE, rows, mode="append", schema_mode="merge")
        return rows.num_rows

    append_rows()


ecoval_producer()
