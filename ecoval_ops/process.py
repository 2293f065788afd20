"""The process: its exit, the crash tests' fault points, and the owner recorded on a run.

A run opened outside an orchestrator records which process opened it, so the next run can tell
whether that process is gone (:func:`owner_gone`).

delta-rs leaves Arrow scan threads that Python's interpreter teardown can catch mid-flight:
about one exit in fifteen then aborts with "terminate called without an active exception"
(SIGABRT, exit 134; delta-io/delta-rs#2184) after all work is done, which a scheduler reads as a
failed night. Entry points therefore flush their output and end with ``os._exit``, skipping the
teardown; every write the commands make is committed before that point.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["FAULT_ENV", "exit_now", "fault_point", "owner_gone", "process_owner"]

FAULT_ENV = "ECOVAL_FAULT_KILL"
"""Names the fault point at which :func:`fault_point` kills the process (crash-safety tests)."""


def exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr, stop an active Spark session, and end the process with ``code``."""
    spark = sys.modules.get("pyspark.sql")
    if spark is not None:
        session = spark.SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL here when ``$ECOVAL_FAULT_KILL`` names this point.

    The points sit where a crash is most damaging (after the embeddings commit, between two
    LCO shards, between adding the value columns and the MERGE); the tests kill real runs there
    and check that the table is at its previous version or fully written, never partial.
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_owner() -> str:
    """This process as ``<host>:<pid>:<start time>``, recorded on the MLflow run it opens.

    The start time tells a reused PID from the process that opened the run.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def owner_gone(owner: str) -> bool:
    """Whether the process :func:`process_owner` described has ended.

    Decided only for a process of this host on a system with ``/proc``; anything else counts as
    alive, so a run of another machine is never taken for a dead one.
    """
    host, pid, start = owner.rsplit(":", 2)
    if host != socket.gethostname() or _start_time(os.getpid()) is None or not pid.isdigit():
        return False
    return _start_time(int(pid)) != start
