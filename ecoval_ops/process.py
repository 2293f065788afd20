"""Ending the process of a command-line entry point.

delta-rs leaves Arrow scan threads that Python's interpreter teardown can catch mid-flight:
about one exit in fifteen then aborts with "terminate called without an active exception"
(SIGABRT, exit 134; delta-io/delta-rs#2184) after all work is done, which a scheduler reads as a
failed night. Entry points therefore flush their output and end with ``os._exit``, skipping the
teardown; every write the commands make is committed before that point.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = ["exit_now"]


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
