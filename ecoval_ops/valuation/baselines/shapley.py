r"""The Shapley baselines of method spec section 7: exact, leave-one-out, truncated Monte-Carlo, KNN.

- :func:`exact_shapley`: Shapley values by enumerating all ``2^n`` subsets (tiny n);
- :func:`leave_one_out`: ``U(B) - U(B \ {i})``;
- :func:`tmc_shapley`: truncated Monte-Carlo Shapley (Ghorbani and Zou, 2019);
- :func:`knn_shapley`: exact Shapley values of the K-nearest-neighbour utility (Jia et al., 2019).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation._inputs import LabelledData, check_training_data
from ecoval_ops.valuation.clustering import FeatureSpace
from ecoval_ops.valuation.learners import learner_from_name
from ecoval_ops.valuation.result import ValuationResult
from ecoval_ops.valuation.trainer import DeviceName
from ecoval_ops.valuation.utility import UtilityName, per_example_utility, prior_utility

__all__ = ["exact_shapley", "knn_shapley", "leave_one_out", "shapley_from_game", "tmc_shapley"]


class _MaskedGame:
    """``U(S)`` for batches of row subsets: one batched training per call, prior for empty S."""

    def __init__(self, data: LabelledData, learner: Any, utility: UtilityName, seed: int, device: DeviceName) -> None:
        space = FeatureSpace.fit(data.X_train, max_dims=None)
        self.X = space.standardise(data.X_train)
        self.X_val = space.standardise(data.X_val)
        self.y = data.y_train
        self.y_val = data.y_val
        self.n_classes = data.n_classes
        self.utility = utility
        self.seed = seed
        self.learner = learner_from_name(learner, device)
        self.empty = float(prior_utility(data.y_train, data.y_val, data.n_classes, utility).mean())
        self.trainings = 0

    def __call__(self, masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        """``(M,)`` mean validation utilities of the models trained on each mask."""
        out = np.full(masks.shape[0], self.empty)
        trained = masks.any(axis=1)
        if trained.any():
            proba = self.learner.predict_proba_masked(
                self.X, self.y, masks[trained], self.X_val, n_classes=self.n_classes, seed=self.seed
            )
            out[trained] = per_example_utility(proba, self.y_val, self.utility).mean(axis=1)
            self.trainings += int(trained.sum())
        return out


def shapley_from_game(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Exact Shapley values of a game given on all ``2^n`` coalitions.

    Args:
        values: ``(2^n,)``; ``values[s]`` is ``G(S)`` for the coalition whose members are the
            set bits of ``s``.

    Returns:
        ``(n,)``: ``phi_i = sum_{S ∌ i} |S|! (n - |S| - 1)! / n! * (G(S ∪ {i}) - G(S))``.
    """
    size = values.shape[0]
    n = size.bit_length() - 1
    if size != 1 << n:
        raise ValueError(f"a game on n players has 2^n values; found {size}")
    coalitions = np.arange(size)
    members = np.array([bin(s).count("1") for s in range(size)])
    weight = np.array(
        [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) if k < n else 0.0 for k in range(n + 1)]
    )
    phi = np.empty(n)
    for i in range(n):
        without = coalitions[(coalitions >> i) & 1 == 0]
        phi[i] = np.sum(weight[members[without]] * (values[without | (1 << i)] - values[without]))
    return phi


def exact_shapley(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    learner: Any = "logistic",
    utility: UtilityName = "log_likelihood",
    max_rows: int = 14,
    seed: int = 0,
    device: DeviceName = "auto",
) -> ValuationResult:
    """Shapley values by training on every subset of the rows (``2^n - 1`` trainings).

    Args:
        X_train: ``(n, d)`` training features.
        y_train: ``(n,)`` training labels.
        X_val: ``(m, d)`` validation features.
        y_val: ``(m,)`` validation labels.
        learner: ``"logistic"``, ``"mlp"`` or a scikit-learn classifier, as for EcoVal.
        utility: ``"log_likelihood"`` or ``"accuracy"``, as for EcoVal.
        max_rows: refuse more rows than this (``2^14`` trainings). Default 14.
        seed: seeds the learner. Default 0.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the torch learners.

    Raises:
        InvalidInputError: more than ``max_rows`` rows.
    """
    data = check_training_data(X_train, y_train, X_val, y_val)
    n = data.X_train.shape[0]
    if n > max_rows:
        raise InvalidInputError(f"exact_shapley enumerates 2^n subsets; n = {n} exceeds max_rows = {max_rows}")
    coalitions = np.arange(1 << n)
    masks = ((coalitions[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
    game = _MaskedGame(data, learner, utility, seed, device)
    return ValuationResult(shapley_from_game(game(masks)), method="exact_shapley", n_trainings=game.trainings)


def leave_one_out(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    learner: Any = "logistic",
    utility: UtilityName = "log_likelihood",
    seed: int = 0,
    device: DeviceName = "auto",
) -> ValuationResult:
    r"""``U(B) - U(B \ {i})`` for every row (``n + 1`` trainings, batched)."""
    data = check_training_data(X_train, y_train, X_val, y_val)
    n = data.X_train.shape[0]
    masks = np.vstack([np.ones((1, n), dtype=bool), ~np.eye(n, dtype=bool)])
    u = _MaskedGame(data, learner, utility, seed, device)(masks)
    return ValuationResult(u[0] - u[1:], method="leave_one_out", n_trainings=n + 1)


def tmc_shapley(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    budget: int = 2000,
    truncation: float = 0.01,
    chunk: int = 64,
    learner: Any = "logistic",
    utility: UtilityName = "log_likelihood",
    seed: int = 0,
    device: DeviceName = "auto",
) -> ValuationResult:
    """Truncated Monte-Carlo Shapley: marginal contributions along random permutations.

    Along each permutation the prefixes are trained ``chunk`` at a time (one batched call);
    once a prefix is strictly within ``truncation * |U(B) - U(empty)|`` of ``U(B)``, the
    remaining marginals of that permutation are 0 and no more of its prefixes are trained
    (``truncation=0`` never truncates).

    Args:
        X_train: ``(n, d)`` training features.
        y_train: ``(n,)`` training labels.
        X_val: ``(m, d)`` validation features.
        y_val: ``(m,)`` validation labels.
        learner: ``"logistic"``, ``"mlp"`` or a scikit-learn classifier, as for EcoVal.
        utility: ``"log_likelihood"`` or ``"accuracy"``, as for EcoVal.
        budget: trainings at most (the full model included). Default 2000.
        truncation: relative truncation tolerance. Default 0.01.
        chunk: prefixes trained per batched call. Default 64.
        seed: seeds the permutations and the learner. Default 0.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the torch learners.

    Returns:
        The mean marginal contribution of each row over the complete permutations; a
        permutation cut short by the budget is dropped.

    Raises:
        InvalidInputError: the budget does not complete one permutation.
    """
    data = check_training_data(X_train, y_train, X_val, y_val)
    n = data.X_train.shape[0]
    game = _MaskedGame(data, learner, utility, seed, device)
    full = float(game(np.ones((1, n), dtype=bool))[0])
    tolerance = truncation * abs(full - game.empty)
    rng = np.random.default_rng(seed)
    total = np.zeros(n)
    permutations = 0
    # Every permutation costs a training unless all of it is truncated; the cap on
    # permutations ends the loop in that case too.
    while game.trainings < budget and permutations < budget:
        order = rng.permutation(n)
        marginal = np.zeros(n)
        previous = game.empty
        position = 0
        while position < n and abs(full - previous) >= tolerance and game.trainings < budget:
            size = min(chunk, n - position, budget - game.trainings)
            masks = np.zeros((size, n), dtype=bool)
            for r in range(size):
                masks[r, order[: position + r + 1]] = True
            utilities = game(masks)
            for r in range(size):
                marginal[order[position + r]] = utilities[r] - previous
                previous = utilities[r]
                if abs(full - previous) < tolerance:
                    break
            position += size
        if position < n and abs(full - previous) >= tolerance:
            break
        total += marginal
        permutations += 1
    if permutations == 0:
        raise InvalidInputError(f"tmc_shapley budget {budget} completes no permutation of {n} rows")
    return ValuationResult(total / permutations, method="tmc_shapley", n_trainings=game.trainings)


def knn_shapley(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    k: int = 10,
) -> ValuationResult:
    """Exact Shapley values of the unweighted K-nearest-neighbour utility (Jia et al., 2019).

    For a validation row with training rows sorted by distance ``alpha_1 .. alpha_N``:
    ``s_N = 1[y_{alpha_N} = y] min(K, N) / (N K)`` (``/ N`` once N >= K) and
    ``s_i = s_{i+1} + (1[y_{alpha_i} = y] - 1[y_{alpha_{i+1}} = y]) / K * min(K, i) / i``;
    the value of a row is the mean over validation rows. Distances are Euclidean on the
    standardised features. No training.
    """
    data = check_training_data(X_train, y_train, X_val, y_val)
    if k < 1:
        raise InvalidInputError(f"k must be at least 1; found {k}")
    space = FeatureSpace.fit(data.X_train, max_dims=None)
    X, Xv = space.standardise(data.X_train), space.standardise(data.X_val)
    n = X.shape[0]
    rank = np.arange(1, n)
    step = np.minimum(k, rank) / rank / k
    values = np.zeros(n)
    sq_train = np.sum(X**2, axis=1)
    for start in range(0, Xv.shape[0], 256):
        xv, yv = Xv[start : start + 256], data.y_val[start : start + 256]
        dist = np.sum(xv**2, axis=1)[:, None] - 2.0 * xv @ X.T + sq_train[None, :]
        order = np.argsort(dist, axis=1, kind="stable")
        match = (data.y_train[order] == yv[:, None]).astype(np.float64)
        increments = (match[:, :-1] - match[:, 1:]) * step[None, :]
        s = np.empty_like(match)
        s[:, -1] = match[:, -1] * min(k, n) / (n * k)
        s[:, :-1] = s[:, -1:] + np.cumsum(increments[:, ::-1], axis=1)[:, ::-1]
        np.add.at(values, order.ravel(), s.ravel())
    return ValuationResult(values / Xv.shape[0], method="knn_shapley", n_trainings=0)
