"""spark-submit entry point: cluster the training rows and save the plan of the leave-cluster-out trainings (step 4)."""

from __future__ import annotations

import sys

from ecoval_ops.pipeline.submit import main

if __name__ == "__main__":
    sys.exit(main("cluster", sys.argv[1:]))
