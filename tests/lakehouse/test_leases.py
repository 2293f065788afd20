"""The write lease of a table in S3 (issue 25), against a real S3 server: one holder at a time."""

from __future__ import annotations

import json
import threading
import time

import pytest

from ecoval_ops.lakehouse.leases import LEASE_NAME, LeaseHeldError, write_lease
from ecoval_ops.storage import TableRef

pytestmark = [pytest.mark.integration]


def test_one_holder_at_a_time_and_the_next_waits_for_it(s3) -> None:
    table = TableRef.of(f"{s3.bucket('lease-wait')}/train")
    events: list[str] = []

    def hold(name: str, seconds: float) -> None:
        with write_lease(table):
            events.append(f"{name} in")
            time.sleep(seconds)
            events.append(f"{name} out")

    first = threading.Thread(target=hold, args=("a", 1.5))
    first.start()
    while not events:
        time.sleep(0.05)
    second = threading.Thread(target=hold, args=("b", 0.0))
    second.start()
    first.join()
    second.join()
    assert events == ["a in", "a out", "b in", "b out"]
    assert not (s3.root / "lease-wait" / "train" / LEASE_NAME).exists()


def test_a_lease_held_too_long_stops_the_writer_with_one_line(s3) -> None:
    table = TableRef.of(f"{s3.bucket('lease-held')}/train")
    with write_lease(table), pytest.raises(LeaseHeldError) as raised, write_lease(table, wait_s=0.5):
        pytest.fail("a second holder got the lease")
    message = str(raised.value)
    assert "another ecoval run" in message and str(table) in message and "\n" not in message


def test_the_lease_of_a_killed_run_expires_and_is_taken_over(s3) -> None:
    import boto3
    from botocore.config import Config

    table = TableRef.of(f"{s3.bucket('lease-stale')}/train")
    lease = s3.root / "lease-stale" / "train" / LEASE_NAME
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint, region_name="us-east-1", config=Config(s3={"addressing_style": "path"})
    )
    stale = json.dumps({"holder": "gone:1:x", "expires": time.time() - 1}).encode()
    client.put_object(Bucket="lease-stale", Key=f"train/{LEASE_NAME}", Body=stale)
    with write_lease(table, wait_s=0.5):
        assert "gone" not in lease.read_text()
    assert not lease.exists()


def test_tables_outside_s3_need_no_lease(tmp_path) -> None:
    with write_lease(TableRef.of(tmp_path / "train")):
        pass
    assert list(tmp_path.iterdir()) == []


def test_wrong_credentials_for_the_lease_are_one_line(s3, monkeypatch) -> None:
    from ecoval_ops.exceptions import InvalidInputError
    from tests.s3 import SECRET

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    table = TableRef.of(f"{s3.bucket('lease-creds')}/train")
    with pytest.raises(InvalidInputError, match="was refused: check the credentials") as raised, write_lease(table):
        pass
    assert SECRET not in str(raised.value)
