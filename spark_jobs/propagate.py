"""spark-submit entry point: value the run's rows per cluster (applyInPandas), stage the value columns (step 5)."""

from __future__ import annotations

import sys

from ecoval_ops.pipeline.submit import main
from ecoval_ops.process import exit_now

if __name__ == "__main__":
    exit_now(main("propagate", sys.argv[1:]))
