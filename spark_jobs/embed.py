"""spark-submit entry point: embed the rows of the source table that have no embedding yet (architecture.md, step 2)."""

from __future__ import annotations

import sys

from ecoval_ops.pipeline.submit import main
from ecoval_ops.process import exit_now

if __name__ == "__main__":
    exit_now(main("embed", sys.argv[1:]))
