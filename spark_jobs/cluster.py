"""spark-submit entry point: cluster the training rows and save the plan of the leave-cluster-out trainings (step 4)."""

from __future__ import annotations

import sys

from ecoval_ops.pipeline.submit import main
from ecoval_ops.process import exit_now

if __name__ == "__main__":
    exit_now(main("cluster", sys.argv[1:]))
