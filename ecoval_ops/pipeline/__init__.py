"""The job steps as plain functions over references (table path + version, run id)."""

from __future__ import annotations

from ecoval_ops.pipeline.engines import DeltaRsEngine, Engine, Rows, SparkEngine, engine_for
from ecoval_ops.pipeline.run import RunSummary, run_valuation
from ecoval_ops.pipeline.steps import RunRef, decide_mode

__all__ = [
    "DeltaRsEngine",
    "Engine",
    "Rows",
    "RunRef",
    "RunSummary",
    "SparkEngine",
    "decide_mode",
    "engine_for",
    "run_valuation",
]
