"""One ecoval writer at a time on a table in S3: a lease object taken with a conditional put.

delta-rs commits to S3 with conditional puts, so delta-rs writers are safe together; Delta's
Spark writer on S3 (``S3SingleDriverLogStore``) assumes a single writing driver and may overwrite
a commit another writer made at the same moment. Every run that writes a table in S3 (the value
columns, the MERGE) therefore holds ``<table>/_ecoval_writer.lease`` while it commits: created with
``If-None-Match: *``, so exactly one run holds it; the others wait for it, and stop with one line
if it is held longer than they wait. A lease left by a killed run expires after ``ttl_s`` and
is then taken over with ``If-Match`` on its ETag. Delta ignores files whose name starts with
``_``, so the lease is invisible to readers and to ``VACUUM``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ecoval_ops.exceptions import EcovalError
from ecoval_ops.storage import TableRef, storage_error

__all__ = ["LEASE_NAME", "LeaseHeldError", "write_lease"]

LEASE_NAME = "_ecoval_writer.lease"
log = logging.getLogger(__name__)


class LeaseHeldError(EcovalError):
    """Another run held a table's write lease for longer than this run waits."""


def _client(table: TableRef) -> Any:
    import boto3
    from botocore.config import Config

    given = table.option
    endpoint = given("AWS_ENDPOINT_URL")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=given("AWS_REGION") or given("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=given("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=given("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=given("AWS_SESSION_TOKEN"),
        config=Config(s3={"addressing_style": "path"} if endpoint else {}, retries={"max_attempts": 3}),
    )


def _code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


@contextmanager
def write_lease(table: TableRef, *, wait_s: float = 900.0, ttl_s: float = 3600.0) -> Iterator[None]:
    """Hold ``table``'s write lease for the block (nothing to hold for a table outside S3).

    Args:
        table: the table written.
        wait_s: how long to wait for a lease another run holds.
        ttl_s: how long a lease lives; one older than that (its run was killed) is taken over.

    Raises:
        LeaseHeldError: another run held the lease for all of ``wait_s``; nothing was written.
        InvalidInputError: the store refused the lease (credentials, bucket), in one line.
    """
    if not table.is_s3:
        yield
        return
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client(table)
    path = table.uri.split("://", 1)[1].partition("/")[2]
    bucket, key = table.bucket, f"{path}/{LEASE_NAME}" if path else LEASE_NAME
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    try:
        etag = _acquire(client, bucket, key, holder, table, wait_s=wait_s, ttl_s=ttl_s)
    except (ClientError, BotoCoreError) as e:
        raise storage_error(e, table) from None
    try:
        yield
    finally:
        _release(client, bucket, key, etag)


def _acquire(client: Any, bucket: str, key: str, holder: str, table: TableRef, *, wait_s: float, ttl_s: float) -> str:
    """Take the lease; its ETag."""
    from botocore.exceptions import ClientError

    deadline, waited = time.monotonic() + wait_s, False
    while True:
        body = json.dumps({"holder": holder, "expires": time.time() + ttl_s}).encode()
        try:
            return str(client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"])
        except ClientError as e:
            if _code(e) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        try:
            found = client.get_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                continue  # released in between
            raise
        lease = json.loads(found["Body"].read() or b"{}")
        if float(lease.get("expires", 0)) < time.time():
            try:
                return str(client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=found["ETag"])["ETag"])
            except ClientError as e:
                if _code(e) not in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                    raise
                continue
        if time.monotonic() > deadline:
            raise LeaseHeldError(
                f"another ecoval run ({lease.get('holder', '?')}) has been writing {table} for longer than "
                f"{wait_s:.0f} s; nothing was written, run again when it has finished"
            )
        if not waited:
            log.warning("waiting for %s's write lease, held by %s", table, lease.get("holder", "?"))
            waited = True
        time.sleep(0.5)


def _release(client: Any, bucket: str, key: str, etag: str) -> None:
    """Drop the lease if it is still ours (one taken over after it expired is left alone)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if client.head_object(Bucket=bucket, Key=key)["ETag"] == etag:
            client.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as e:
        log.warning("could not release the write lease %s/%s: %s", bucket, key, _code(e) or type(e).__name__)
