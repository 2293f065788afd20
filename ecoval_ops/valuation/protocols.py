"""The composable parts of EcoVal as Protocols (pyDVL style).

Local implementations live beside this module; the Spark ones of later stages satisfy the same
Protocols, so the method code never branches on an engine.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.production import ClusterGame, LeaveOutUtilities
from ecoval_ops.valuation.propagation import PropagationState, RowInputs

__all__ = ["Clusterer", "Learner", "ProductionFunction", "Propagator"]


@runtime_checkable
class Clusterer(Protocol):
    """Partitions the rows of the cluster space (stage 0)."""

    def fit_predict(self, Z: NDArray[np.float64], n_clusters: int, seed: int) -> NDArray[np.int64]:
        """Return ``(n,)`` cluster ids in ``0..n_clusters-1``."""
        ...


@runtime_checkable
class Learner(Protocol):
    """Trains one model per row mask and predicts class probabilities (stages 1 and 2)."""

    def predict_proba_masked(
        self,
        X: NDArray[np.float64],
        y: NDArray[np.int64],
        masks: NDArray[np.bool_],
        X_val: NDArray[np.float64],
        *,
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        """Return ``(M, m, K)`` probabilities of the M masked models on ``X_val``."""
        ...


@runtime_checkable
class ProductionFunction(Protocol):
    """Turns leave-out utilities into cluster values (section 3)."""

    def fit(self, u: LeaveOutUtilities) -> ClusterGame:
        """Return the fitted cluster game."""
        ...


@runtime_checkable
class Propagator(Protocol):
    """Turns cluster values into row values (section 4)."""

    def fit(
        self,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        clusters: NDArray[np.int64],
        game: ClusterGame,
        *,
        sizes: NDArray[np.int64] | None = None,
    ) -> tuple[PropagationState, RowInputs]:
        """Return the state that values rows and the inputs of its members.

        ``sizes``: rows per cluster over every training row when the members are a sample of
        them (spec section 5b); default the members' own counts.
        """
        ...
