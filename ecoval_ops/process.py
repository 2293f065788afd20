"""Ending the process: entry points' exit, and the fault-injection points of the crash tests.

delta-rs leaves Arrow scan threads that Python's interpreter teardown can catch mid-flight:
about one exit in fifteen then aborts with "terminate called without an active exception"
(SIGABRT, exit 134; delta-io/delta-rs#2184) after all work is done, which a scheduler reads as a
failed night. Entry points therefore flush their output and end with ``os._exit``, skipping the
teardown; every write the commands make is committed before that point.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

__all__ = ["FAULT_ENV", "exit_now", "fault_point"]

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
