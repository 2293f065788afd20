"""The job steps as plain functions over references (table path + version, run id)."""

from __future__ import annotations

from ecoval_ops.pipeline.engines import DeltaRsEngine, Engine, Rows, SparkEngine, engine_for
from ecoval_ops.pipeline.run import RunSummary, decide_mode, run_valuation

__all__ = ["DeltaRsEngine", "Engine", "Rows", "RunSummary", "SparkEngine", "decide_mode", "engine_for", "run_valuation"]
