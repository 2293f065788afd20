"""spark-submit entry point: embed the rows of the source table that have no embedding yet (architecture.md, step 2)."""

from __future__ import annotations

import sys

from ecoval_ops.pipeline.submit import main

if __name__ == "__main__":
    sys.exit(main("embed", sys.argv[1:]))
