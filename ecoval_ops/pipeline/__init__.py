"""The job steps as plain functions over references (table path + version, run id)."""

from __future__ import annotations

from ecoval_ops.engines import DeltaRsEngine, Engine, SparkEngine, engine_for
from ecoval_ops.lakehouse.source import Rows
from ecoval_ops.pipeline.pinned import PinnedRun
from ecoval_ops.pipeline.refit import decide_mode
from ecoval_ops.pipeline.run import RunSummary, run_valuation
from ecoval_ops.pipeline.steps import Detection, RunRef

__all__ = [
    "DeltaRsEngine",
    "Detection",
    "Engine",
    "PinnedRun",
    "Rows",
    "RunRef",
    "RunSummary",
    "SparkEngine",
    "decide_mode",
    "engine_for",
    "run_valuation",
]
