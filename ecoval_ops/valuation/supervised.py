"""The supervised metric and the label prior of the intrinsic vote (a departure from spec section 4).

Neither is a training of the cluster game, so the trainings count is unchanged.

- **Metric.** Extremely randomised trees (``METRIC_TREES`` of them, leaves of at least
  ``METRIC_LEAF`` rows) fitted on the cluster-space rows ``Z`` and their labels, on at most
  ``METRIC_ROWS`` of them drawn with the fit's seed; feature weights
  ``w_j = I_j / max_j I_j``, ``I_j`` the trees' impurity importance of feature j; the neighbour
  space is ``S = Z * w``: dimensions that separate the labels count, the others fade, and a
  feature that acts on the label non-linearly (pol's few of 48, cpu_act's) counts as much as a
  linear one.
- **Prior.** Closed-form ridge least squares of the one-hot labels: for rows ``R`` with features
  ``F_R``, centred over ``R``, ``W_R = (F_R^T F_R + lambda I)^{-1} F_R^T Y_R`` and
  ``b_R = mean(Y_R) - mean(F_R) W_R``. The features are random Fourier features of ``S`` (an
  approximate Gaussian kernel, so the prior is not linear): ``phi(s) = sqrt(2 / D) cos(s Omega + b)``,
  ``Omega ~ N(0, 2 g I)``, ``b ~ U(0, 2 pi)``, ``g = 1 / sum_j var(S_j)``, ``D = 400``, drawn
  from the fit's seed. For each cluster ``c``, ``(W_c, b_c)`` over the rows outside ``c``: a
  model that never saw ``c``. A row of ``c`` gets class scores
  ``q_iy = clip(phi(s_i) W_c + b_c, 0, 1)_y``, how plausible each label is, judged without the
  row's own neighbourhood.

``../shared/research/intrinsic-variants.md`` took both from the full and leave-cluster-out
learner fits (a linear prior); the random-feature prior finds flipped labels that a linear model
cannot (pol, 2dplanes), and needs no learner output. The trees' metric replaced the ridge fit's
coefficients ``mean_k |W_jk - mean_k W_jk|``, which missed non-linear features: detection AUROC
(seeds 0-4) P1 0.954 -> 0.972, cpu_act 0.966 -> 0.971, phoneme 0.894 -> 0.898 (``BENCHMARKS.md``;
seeds 5-9 agree).
Cost: ``O(n q^2 + n D^2 + p D^3)`` and the trees on at most ``METRIC_ROWS`` rows (3-6 s at that
size and 64 dimensions on 2 cores, 0.1 s at 1,000 rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.threads import available_threads

__all__ = ["LabelPrior", "metric_weights", "random_features"]

RIDGE = 1.0
"""``lambda`` of the ridge fits, against features of unit scale (``F^T F`` is of order n)."""

FEATURES = 400
"""``D``, the random Fourier features of the prior."""

METRIC_TREES = 100
METRIC_LEAF = 3
METRIC_ROWS = 20_000
"""The metric's trees, their smallest leaf and the rows they are fitted on at most."""

_CHUNK_ROWS = 65_536


def _ridge(
    ff: NDArray[np.float64], fy: NDArray[np.float64], f_sum: NDArray[np.float64], y_sum: NDArray[np.float64], n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(W, b)`` of centred ridge least squares from the rows' sums and cross-products."""
    f_mean, y_mean = f_sum / n, y_sum / n
    sff = ff - n * np.outer(f_mean, f_mean)
    sfy = fy - n * np.outer(f_mean, y_mean)
    coef = np.asarray(np.linalg.solve(sff + RIDGE * np.eye(ff.shape[0]), sfy), dtype=np.float64)
    return coef, np.asarray(y_mean - f_mean @ coef, dtype=np.float64)


@dataclass(frozen=True)
class LabelPrior:
    """The fitted metric weights, random features and leave-cluster-out class scores.

    Attributes:
        weights: ``(q,)`` feature weights ``w_j`` of the neighbour space ``S = Z * w``.
        frequencies: ``(q, D)`` ``Omega``.
        phases: ``(D,)`` ``b``.
        coef: ``(p, D, K)`` ``W_c`` of the fit without cluster c.
        intercept: ``(p, K)`` ``b_c``.
    """

    weights: NDArray[np.float64]
    frequencies: NDArray[np.float64]
    phases: NDArray[np.float64]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]

    @classmethod
    def fit(
        cls, Z: NDArray[np.float64], y: NDArray[np.int64], clusters: NDArray[np.int64], p: int, seed: int
    ) -> LabelPrior:
        """Fit on the ``(n, q)`` training rows, their class codes and clusters."""
        n_classes = int(y.max()) + 1
        Y = np.eye(n_classes)[y]
        y_sum = Y.sum(axis=0)
        weights = metric_weights(Z, y, seed)
        S = Z * weights
        total_var = float(S.var(axis=0).sum())
        g = 1.0 / total_var if total_var > 0 else 1.0
        rng = np.random.default_rng(seed)
        frequencies = rng.normal(0.0, np.sqrt(2.0 * g), size=(Z.shape[1], FEATURES))
        phases = rng.uniform(0.0, 2.0 * np.pi, size=FEATURES)
        # Per-cluster sums of the features' cross-products, in row chunks: the (n, D) feature
        # matrix itself would take 3 GB at a million rows.
        ff = np.zeros((p, FEATURES, FEATURES))
        fy = np.zeros((p, FEATURES, n_classes))
        f_sum = np.zeros((p, FEATURES))
        for start in range(0, Z.shape[0], _CHUNK_ROWS):
            F = random_features(S[start : start + _CHUNK_ROWS], frequencies, phases).astype(np.float64)
            part, labels = clusters[start : start + _CHUNK_ROWS], Y[start : start + _CHUNK_ROWS]
            for c in np.unique(part):
                rows = part == c
                ff[c] += F[rows].T @ F[rows]
                fy[c] += F[rows].T @ labels[rows]
                f_sum[c] += F[rows].sum(axis=0)
        sizes = np.bincount(clusters, minlength=p)
        y_by_cluster = np.zeros((p, n_classes))
        np.add.at(y_by_cluster, clusters, Y)
        ff_all, fy_all, f_all = ff.sum(axis=0), fy.sum(axis=0), f_sum.sum(axis=0)
        coef = np.empty((p, FEATURES, n_classes))
        intercept = np.empty((p, n_classes))
        for c in range(p):
            coef[c], intercept[c] = _ridge(
                ff_all - ff[c], fy_all - fy[c], f_all - f_sum[c], y_sum - y_by_cluster[c], Z.shape[0] - int(sizes[c])
            )
        return cls(weights=weights, frequencies=frequencies, phases=phases, coef=coef, intercept=intercept)

    def space(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``S = Z * w``: the rows in the supervised metric."""
        return Z * self.weights

    def scores(self, Z: NDArray[np.float64], cluster: int) -> NDArray[np.float64]:
        """``(m, K)`` class scores ``q_iy`` of rows of ``cluster``, from the fit without it."""
        F = random_features(self.space(Z), self.frequencies, self.phases)
        q = F.astype(np.float64) @ self.coef[cluster] + self.intercept[cluster]
        return np.asarray(np.clip(q, 0.0, 1.0), dtype=np.float64)


def metric_weights(Z: NDArray[np.float64], y: NDArray[np.int64], seed: int) -> NDArray[np.float64]:
    """``w_j = I_j / max_j I_j`` of the trees fitted on (a seeded sample of) the rows; all 1 where no feature splits."""
    from sklearn.ensemble import ExtraTreesClassifier  # scikit-learn is heavy to import; DAG parsing must not pay it

    rows = np.arange(y.size)
    if y.size > METRIC_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(y.size, METRIC_ROWS, replace=False))
    trees = ExtraTreesClassifier(
        n_estimators=METRIC_TREES, min_samples_leaf=METRIC_LEAF, random_state=seed, n_jobs=available_threads()
    ).fit(Z[rows], y[rows])
    importance = np.asarray(trees.feature_importances_, dtype=np.float64)
    return importance / importance.max() if importance.max() > 0 else np.ones(Z.shape[1])


def random_features(
    S: NDArray[np.float64], frequencies: NDArray[np.float64], phases: NDArray[np.float64]
) -> NDArray[np.float32]:
    """``phi(s) = sqrt(2 / D) cos(s Omega + b)``, the cosine in float32.

    The cosine is the cost of scoring, 13 times cheaper in float32, whose rounding (1e-7) is far
    below what the ridge fit resolves. Its argument stays a float64 product: a float32 one rounds
    a row differently by where it falls in the matrix, and identical rows must get identical
    priors (invariant 3).
    """
    arg = (S @ frequencies + phases).astype(np.float32)
    return np.asarray(np.float32(np.sqrt(2.0 / phases.size)) * np.cos(arg), dtype=np.float32)
