"""The embeddings table of a run's workspace: key -> embedding, appended as rows arrive (step 2).

Each append carries an application transaction (the source version it embedded), so a retried
embed step commits nothing, and :func:`embedded_through` tells how far the table has come;
:func:`embed_once` wraps either engine's append, redone after a concurrent commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ecoval_ops.lakehouse.tables import TableLike, open_table, table_exists, write_table
from ecoval_ops.lakehouse.value_writes import retry_conflicts
from ecoval_ops.storage import TableRef

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["append_embeddings", "embed_app_id", "embed_once", "embedded_keys", "embedded_through"]


def embedded_keys(target: TableLike, key: str) -> pa.Array | None:
    """The keys the embeddings table ``target`` holds; None before it exists."""
    if not table_exists(target):
        return None
    return open_table(target).to_pyarrow_dataset().to_table(columns=[key]).column(key).combine_chunks()


def embed_app_id(target: TableLike) -> str:
    """The application-transaction id of appends to the embeddings table ``target``."""
    return f"ecoval-embed-{TableRef.of(target).name}"


def embedded_through(target: TableLike) -> int | None:
    """The newest source version whose rows the embeddings table ``target`` holds."""
    if not table_exists(target):
        return None
    version = open_table(target).transaction_version(embed_app_id(target))
    return None if version is None else int(version)


def embed_once(
    target: TableLike, version: int, conflict: type[Exception] | tuple[type[Exception], ...], embed: Callable[[], int]
) -> int:
    """Run an engine's embedding of ``source@version`` into ``target`` unless it is there already.

    ``embed`` appends the embeddings of the rows ``target`` lacks and returns their count; after
    a concurrent commit (another run embedding the same table, or creating ``target`` at the same
    moment) it runs again against the new version, where it may find the rows embedded.

    Returns:
        Rows embedded (0 when ``target`` already holds ``version``).
    """

    def attempt() -> int:
        done = embedded_through(target)
        if done is not None and done >= version:
            return 0
        return embed()

    return retry_conflicts(target, conflict, attempt, what="the embeddings append")


def append_embeddings(target: TableLike, table: pa.Table | pa.RecordBatchReader, version: int) -> None:
    """Append embeddings of ``source@version`` rows to ``target`` as an idempotent transaction."""
    from deltalake import CommitProperties, Transaction

    write_table(
        target,
        table,
        mode="append",
        commit_properties=CommitProperties(app_transactions=[Transaction(embed_app_id(target), version)]),
    )
