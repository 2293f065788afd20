"""Per-example utilities of a trained model on the validation rows (method spec section 1).

``U(S) = mean_j u_j(A(S))``. Every training returns the whole vector ``u_j`` rather than its
mean, so each difference of utilities carries a paired standard error at no extra cost.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["PROBA_FLOOR", "UtilityName", "per_example_utility", "prior_utility"]

UtilityName = Literal["log_likelihood", "accuracy"]

PROBA_FLOOR = 1e-3
"""Probabilities are clipped here before the log: one mislabeled validation row can then move
a utility by at most ``log(1e3) ≈ 6.9`` nats divided by m, instead of without bound."""


def per_example_utility(
    proba: NDArray[np.float64], y_val: NDArray[np.int64], utility: UtilityName
) -> NDArray[np.float64]:
    """Utility ``u_j`` of each model on each validation row.

    Args:
        proba: ``(M, m, K)`` predicted class probabilities of M models on m rows.
        y_val: ``(m,)`` true class codes.
        utility: ``"log_likelihood"``: ``log max(p(y_j | e_j), PROBA_FLOOR)``;
            ``"accuracy"``: ``1[argmax_k p_k = y_j]``.

    Returns:
        ``(M, m)`` float64 utilities.
    """
    if utility == "log_likelihood":
        p_true = np.take_along_axis(proba, y_val[None, :, None], axis=2)[..., 0]
        return np.asarray(np.log(np.maximum(p_true, PROBA_FLOOR)), dtype=np.float64)
    if utility == "accuracy":
        correct: NDArray[np.float64] = (np.argmax(proba, axis=2) == y_val[None, :]).astype(np.float64)
        return correct
    raise ValueError(f"unknown utility {utility!r}; expected 'log_likelihood' or 'accuracy'")


def prior_utility(
    y_train: NDArray[np.int64], y_val: NDArray[np.int64], n_classes: int, utility: UtilityName
) -> NDArray[np.float64]:
    """``u_j(empty)``: the class-prior predictor of the training labels (no training).

    Returns:
        ``(m,)`` float64 utilities of predicting the training class frequencies for every row.
    """
    prior = np.bincount(y_train, minlength=n_classes).astype(np.float64) / y_train.shape[0]
    proba = np.broadcast_to(prior, (1, y_val.shape[0], n_classes))
    return np.asarray(per_example_utility(np.ascontiguousarray(proba), y_val, utility)[0], dtype=np.float64)
