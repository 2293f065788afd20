"""The composable parts of EcoVal as Protocols (pyDVL style).

Local implementations live beside this module; the Spark ones of later stages satisfy the same
Protocols, so the method code never branches on an engine.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.production import ClusterGame, LeaveOutUtilities
from ecoval_ops.valuation.propagation_state import RowInputs
from ecoval_ops.valuation.supervised import LabelPrior

__all__ = ["Classifier", "Clusterer", "FittedState", "Learner", "ProductionFunction", "Propagator"]


class FittedState(Protocol):
    """What a :class:`Propagator` fits: it values rows in and out of sample (sections 4 and 5).

    :class:`~ecoval_ops.valuation.propagation_state.PropagationState` is the one the method ships; a
    saved model stores it field by field.
    """

    @property
    def Z(self) -> NDArray[np.float64]:  # noqa: N802 (the spec's name)
        """``(R, q)`` the members in the cluster space."""
        ...

    @property
    def y(self) -> NDArray[np.int64]:
        """``(R,)`` the members' class codes."""
        ...

    @property
    def sizes(self) -> NDArray[np.int64]:
        """``(p,)`` ``n_c`` over every training row."""
        ...

    @property
    def share(self) -> NDArray[np.float64]:
        """``(p,)`` ``share_c*``."""
        ...

    @property
    def shrink(self) -> NDArray[np.float64]:
        """``(p,)`` the empirical-Bayes weights ``lambda_c``."""
        ...

    @property
    def x_mean(self) -> NDArray[np.float64]:
        """``(p,)`` ``mean_{j in c} x_j``."""
        ...

    @property
    def h_vote(self) -> NDArray[np.float64]:
        """``(p,)`` the vote bandwidths ``h'_c``."""
        ...

    @property
    def k_vote(self) -> NDArray[np.int64]:
        """``(p,)`` the vote neighbours per cluster."""
        ...

    @property
    def kappa(self) -> float:
        """``kappa``."""
        ...

    @property
    def gamma(self) -> float:
        """``gamma``."""
        ...

    @property
    def prior_weight(self) -> float:
        """``m0``."""
        ...

    @property
    def prior(self) -> LabelPrior:
        """The supervised metric and the leave-cluster-out class scores."""
        ...

    @property
    def recall(self) -> NDArray[np.float64]:
        """``(p,)`` each cluster's neighbour-search recall@k (NaN where the search is exact)."""
        ...

    def index_kinds(self) -> list[str]:
        """``(p,)`` each cluster's neighbour search, ``exact`` or ``approx``."""
        ...

    def neighbours(
        self, Z: NDArray[np.float64], cluster: int, exclude: NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Distances and member indices of the nearest candidates of rows ``Z`` of ``cluster``."""
        ...

    def inputs(
        self,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        clusters: NDArray[np.int64],
        exclude: NDArray[np.int64] | None = None,
    ) -> RowInputs:
        """``alpha``, ``beta``, ``rho`` and the supported label of rows ``(Z, y)``."""
        ...

    def values(self, x: NDArray[np.float64], clusters: NDArray[np.int64]) -> NDArray[np.float64]:
        """``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)``."""
        ...

    def centred(self, x_sum: NDArray[np.float64]) -> FittedState:
        """The state with ``mean_{j in c} x_j = x_sum_c / n_c``."""
        ...


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
class Classifier(Protocol):
    """A scikit-learn classifier, trained one model per mask (:class:`~.learners.SklearnLearner`)."""

    def fit(self, X: NDArray[np.float64], y: NDArray[np.int64]) -> Classifier:
        """Fit on ``(n, d)`` rows and their labels."""
        ...

    def predict_proba(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``(n, K)`` class probabilities."""
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
    ) -> tuple[FittedState, RowInputs]:
        """Return the state that values rows and the inputs of its members.

        ``sizes``: rows per cluster over every training row when the members are a sample of
        them (spec section 5b); default the members' own counts.
        """
        ...
