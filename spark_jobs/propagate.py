"""spark-submit entry point: value the run's rows per cluster (applyInPandas), stage the value columns (step 5)."""

from __future__ import annotations

import sys

from ecoval_ops.pipeline.submit import main

if __name__ == "__main__":
    sys.exit(main("propagate", sys.argv[1:]))
