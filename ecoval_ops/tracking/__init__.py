"""MLflow: runs, params, metrics and the valuation model in the registry."""

from __future__ import annotations

from ecoval_ops.tracking.runs import CURRENT_ALIAS, Shard, TableInput, ValuationTracker

__all__ = ["CURRENT_ALIAS", "Shard", "TableInput", "ValuationTracker"]
