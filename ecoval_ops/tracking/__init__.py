"""MLflow only: a valuation's runs (:mod:`.runs`), its model registry (:mod:`.registry`), one store (:mod:`.store`)."""

from __future__ import annotations

from ecoval_ops.tracking.registry import CURRENT_ALIAS, ModelRegistry
from ecoval_ops.tracking.runs import Shard, TableInput, ValuationTracker

__all__ = ["CURRENT_ALIAS", "ModelRegistry", "Shard", "TableInput", "ValuationTracker"]
