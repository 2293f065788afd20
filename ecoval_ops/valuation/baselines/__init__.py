"""Baselines implemented beside EcoVal (method spec section 7), same inputs and output.

Each takes ``(X_train, y_train, X_val, y_val)`` and returns a
:class:`~ecoval_ops.valuation.result.ValuationResult`, the type EcoVal returns: the method's
name, the trainings it ran and the ``(n,)`` row values (``np.asarray(result)``). The
learner-based baselines train through the same batched trainer as EcoVal and use the same
utility, so a comparison measures the valuation method, not the learner.
:mod:`.shapley` holds the Shapley family, :mod:`.detection` the mislabelled-row detectors.
"""

from __future__ import annotations

from ecoval_ops.valuation.baselines.detection import confident_learning, data_oob, knn_agreement
from ecoval_ops.valuation.baselines.shapley import (
    exact_shapley,
    knn_shapley,
    leave_one_out,
    shapley_from_game,
    tmc_shapley,
)

__all__ = [
    "confident_learning",
    "data_oob",
    "exact_shapley",
    "knn_agreement",
    "knn_shapley",
    "leave_one_out",
    "shapley_from_game",
    "tmc_shapley",
]
