"""The supervised metric and the label prior of the intrinsic vote (a departure from spec section 4).

Both come from closed-form ridge least squares of the one-hot labels on the cluster-space rows
``Z`` (``(n, q)``); no learner is trained, so the trainings count is unchanged. For rows ``R``,
centred over ``R`` (``Z_R``, ``Y_R``), ``W_R = (Z_R^T Z_R + lambda I)^{-1} Z_R^T Y_R`` and
``b_R = mean(Y_R) - mean(Z_R) W_R``.

- **Metric.** ``W`` over every training row, centred over classes, ``W~_jk = W_jk - mean_k W_jk``;
  feature weights ``w_j = mean_k |W~_jk| / max_j mean_k |W~_jk|``; the neighbour space is
  ``S = Z * w``: dimensions that separate the labels count, the others fade.
- **Prior.** For each cluster ``c``, ``(W_c, b_c)`` over the rows outside ``c``: a model that never
  saw ``c``. A row of ``c`` gets class scores ``q_iy = clip(z_i W_c + b_c, 0, 1)_y``, an estimate
  of how plausible each label is, made without the row's own neighbourhood.

``../shared/research/intrinsic-variants.md`` took both from the full and leave-cluster-out
learner fits; the ridge forms need no learner output and gave the same detection on the five
protocols (``BENCHMARKS.md``). Cost: ``O(n q^2 + p q^3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["LabelPrior"]

RIDGE = 1.0
"""``lambda`` of the ridge fits, against standardised features (``Z^T Z`` is of order n)."""


def _ridge(
    zz: NDArray[np.float64], zy: NDArray[np.float64], z_sum: NDArray[np.float64], y_sum: NDArray[np.float64], n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(W, b)`` of centred ridge least squares from the rows' sums and cross-products."""
    z_mean, y_mean = z_sum / n, y_sum / n
    szz = zz - n * np.outer(z_mean, z_mean)
    szy = zy - n * np.outer(z_mean, y_mean)
    coef = np.asarray(np.linalg.solve(szz + RIDGE * np.eye(zz.shape[0]), szy), dtype=np.float64)
    return coef, np.asarray(y_mean - z_mean @ coef, dtype=np.float64)


@dataclass(frozen=True)
class LabelPrior:
    """The fitted metric weights and leave-cluster-out class scores.

    Attributes:
        weights: ``(q,)`` feature weights ``w_j`` of the neighbour space ``S = Z * w``.
        coef: ``(p, q, K)`` ``W_c`` of the fit without cluster c.
        intercept: ``(p, K)`` ``b_c``.
    """

    weights: NDArray[np.float64]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]

    @classmethod
    def fit(cls, Z: NDArray[np.float64], y: NDArray[np.int64], clusters: NDArray[np.int64], p: int) -> LabelPrior:
        """Fit on the ``(n, q)`` training rows, their class codes and clusters."""
        n_classes = int(y.max()) + 1
        Y = np.eye(n_classes)[y]
        zz, zy, z_sum, y_sum = Z.T @ Z, Z.T @ Y, Z.sum(axis=0), Y.sum(axis=0)
        full, _ = _ridge(zz, zy, z_sum, y_sum, Z.shape[0])
        spread = np.abs(full - full.mean(axis=1, keepdims=True)).mean(axis=1)
        weights = spread / spread.max() if spread.max() > 0 else np.ones_like(spread)
        coef = np.empty((p, Z.shape[1], n_classes))
        intercept = np.empty((p, n_classes))
        for c in range(p):
            rows = clusters == c
            Zc, Yc = Z[rows], Y[rows]
            coef[c], intercept[c] = _ridge(
                zz - Zc.T @ Zc, zy - Zc.T @ Yc, z_sum - Zc.sum(axis=0), y_sum - Yc.sum(axis=0), Z.shape[0] - Zc.shape[0]
            )
        return cls(weights=weights, coef=coef, intercept=intercept)

    def space(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``S = Z * w``: the rows in the supervised metric."""
        return Z * self.weights

    def scores(self, Z: NDArray[np.float64], cluster: int) -> NDArray[np.float64]:
        """``(m, K)`` class scores ``q_iy`` of rows of ``cluster``, from the fit without it."""
        return np.asarray(np.clip(Z @ self.coef[cluster] + self.intercept[cluster], 0.0, 1.0), dtype=np.float64)
