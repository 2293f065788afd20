"""The job steps as plain functions over references (table path + version, run id)."""

from __future__ import annotations

from ecoval_ops.pipeline.run import RunSummary, decide_mode, read_rows, run_valuation

__all__ = ["RunSummary", "decide_mode", "read_rows", "run_valuation"]
