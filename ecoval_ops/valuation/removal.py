"""Point removal (benchmarks.md): retrain without the highest- or lowest-valued rows.

A good valuation ranks first the rows whose removal hurts most: accuracy falls fast when the
top rows go and holds (or rises, when noisy rows go) when the bottom rows go. All the models
of a curve train in one batched call of the learner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.learners import learner_from_name
from ecoval_ops.valuation.trainer import DeviceName

__all__ = ["SHARES", "RemovalCurve", "removal_curve"]

SHARES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 11))
"""Shares of rows removed along a curve: 5%, 10%, ..., 50%."""


@dataclass(frozen=True)
class RemovalCurve:
    """Accuracy on the evaluation rows after removing shares of the training rows by value.

    Attributes:
        shares: the shares removed.
        full: accuracy with every row.
        top: ``top[j]``: accuracy without the ``shares[j]`` highest-valued rows.
        bottom: ``bottom[j]``: accuracy without the ``shares[j]`` lowest-valued rows.
        without_suspects: accuracy without the rows of ``drop`` (the suspects), or None.
    """

    shares: tuple[float, ...]
    full: float
    top: tuple[float, ...]
    bottom: tuple[float, ...]
    without_suspects: float | None = None

    def at(self, share: float) -> float:
        """Accuracy after removing the top ``share`` (``rm20`` is ``at(0.2)``)."""
        return self.top[self.shares.index(share)]

    def without_lowest(self, share: float) -> float | None:
        """Accuracy after removing the lowest ``share``; None where the curve has no such point."""
        return next((b for s, b in zip(self.shares, self.bottom, strict=True) if abs(s - share) < 1e-9), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "shares": list(self.shares),
            "full": self.full,
            "top": list(self.top),
            "bottom": list(self.bottom),
            "without_suspects": self.without_suspects,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RemovalCurve:
        """The curve :meth:`to_dict` wrote (curves saved before ``without_suspects`` have None)."""
        suspects = saved.get("without_suspects")
        return cls(
            tuple(saved["shares"]),
            float(saved["full"]),
            tuple(saved["top"]),
            tuple(saved["bottom"]),
            None if suspects is None else float(suspects),
        )


def removal_curve(
    X: NDArray[np.float64],
    y: NDArray[np.int64],
    values: NDArray[np.float64],
    X_eval: NDArray[np.float64],
    y_eval: NDArray[np.int64],
    *,
    n_classes: int,
    learner: Any = "logistic",
    shares: tuple[float, ...] = SHARES,
    seed: int = 0,
    device: DeviceName = "cpu",
    drop: NDArray[np.bool_] | None = None,
) -> RemovalCurve:
    """Retrain ``learner`` without the top and the bottom ``shares`` of rows by ``values``.

    Args:
        X: ``(n, d)`` training features, as the learner takes them (standardised).
        y: ``(n,)`` class codes.
        values: ``(n,)`` row values; ties keep row order.
        X_eval: ``(m, d)`` evaluation features.
        y_eval: ``(m,)`` evaluation class codes.
        n_classes: number of classes.
        learner: as EcoVal's ``learner``. Default logistic regression.
        shares: shares removed. Default 5% to 50%.
        seed: seeds the learner.
        device: the torch learners' device. Default CPU.
        drop: ``(n,)`` rows to remove in one more training (the suspects), or None.
    """
    n = values.size
    order = np.argsort(-values, kind="stable")
    masks = np.ones((1 + 2 * len(shares) + (drop is not None), n), dtype=bool)
    if drop is not None:
        masks[-1] = ~drop
    for j, share in enumerate(shares):
        k = round(share * n)
        masks[1 + j, order[:k]] = False
        masks[1 + len(shares) + j, order[n - k :]] = False
    proba = learner_from_name(learner, device).predict_proba_masked(X, y, masks, X_eval, n_classes=n_classes, seed=seed)
    accuracy = (proba.argmax(axis=2) == y_eval[None, :]).mean(axis=1)
    m = len(shares)
    return RemovalCurve(
        shares=tuple(shares),
        full=float(accuracy[0]),
        top=tuple(float(a) for a in accuracy[1 : 1 + m]),
        bottom=tuple(float(a) for a in accuracy[1 + m : 1 + 2 * m]),
        without_suspects=float(accuracy[-1]) if drop is not None else None,
    )
