"""Stage 0 of the method: embedding space, k-means clusters, soft membership (spec section 2).

No model is trained here. The fitted :class:`ClusterModel` is part of the valuation state: it
assigns new rows to clusters by the same rule that assigned the training rows, so an
out-of-sample training row lands in its own cluster (invariant 6).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import EcovalWarning, InvalidInputError

__all__ = [
    "ClusterAssigner",
    "ClusterModel",
    "FeatureSpace",
    "KMeansClusterer",
    "choose_n_clusters",
    "min_cluster_size",
    "n_trainings",
]

_CHUNK_ROWS = 8192


@dataclass(frozen=True)
class FeatureSpace:
    """Standardisation of the embeddings, optionally followed by PCA.

    Attributes:
        mean: ``(d,)`` training mean.
        scale: ``(d,)`` training standard deviation (1 where a column is constant).
        components: ``(q, d)`` PCA axes of the standardised embeddings, or ``(0, d)`` for none.
    """

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    components: NDArray[np.float64]

    @classmethod
    def fit(cls, X: NDArray[np.float64], *, max_dims: int | None) -> FeatureSpace:
        """Fit on ``(n, d)`` training embeddings; PCA to ``max_dims`` when ``d`` exceeds it.

        PCA is the eigen-decomposition of the ``d x d`` covariance with each axis' sign fixed
        (largest entry positive), so it is deterministic and costs one pass over the rows.
        """
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        d = X.shape[1]
        if max_dims is None or d <= max_dims:
            return cls(mean=mean, scale=scale, components=np.zeros((0, d)))
        Z = (X - mean) / scale
        _, vectors = np.linalg.eigh(Z.T @ Z / Z.shape[0])
        axes = vectors[:, ::-1][:, :max_dims].T
        signs = np.sign(axes[np.arange(max_dims), np.argmax(np.abs(axes), axis=1)])
        return cls(mean=mean, scale=scale, components=np.ascontiguousarray(axes * signs[:, None]))

    def standardise(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(X - mean) / scale``: the space the learner trains in."""
        return (X - self.mean) / self.scale

    def cluster_space(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Standardised, then projected on the PCA axes when there are any."""
        Z = self.standardise(X)
        return Z if self.components.shape[0] == 0 else Z @ self.components.T


class KMeansClusterer:
    """k-means with k-means++ initialisation and a fixed seed (scikit-learn's ``KMeans``).

    Args:
        n_init: k-means restarts; the best inertia wins. Default 4.
    """

    def __init__(self, *, n_init: int = 4) -> None:
        self.n_init = n_init

    def fit_predict(self, Z: NDArray[np.float64], n_clusters: int, seed: int) -> NDArray[np.int64]:
        """Return ``(n,)`` cluster ids in ``0..n_clusters-1`` of the rows of ``Z``."""
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_clusters, init="k-means++", n_init=self.n_init, random_state=seed)
        return np.asarray(km.fit_predict(Z), dtype=np.int64)


@dataclass(frozen=True)
class ClusterModel:
    """Spherical-Gaussian soft membership of the fitted clusters.

    ``r_c(e) ∝ exp(-||e - mu_c||^2 / (2 s_c^2))``, ``s_c^2`` the mean within-cluster squared
    distance. Rows are assigned to ``argmax_c r_c``, in and out of sample alike.

    Attributes:
        centroids: ``(p, q)`` cluster centres ``mu_c`` in the cluster space.
        s2: ``(p,)`` spreads ``s_c^2``.
    """

    centroids: NDArray[np.float64]
    s2: NDArray[np.float64]

    @property
    def n_clusters(self) -> int:
        """P."""
        return int(self.centroids.shape[0])

    @classmethod
    def from_labels(
        cls, Z: NDArray[np.float64], labels: NDArray[np.int64], *, min_size: int
    ) -> tuple[ClusterModel, NDArray[np.int64]]:
        """Fit centres and spreads to a partition, then reassign by responsibility.

        Clusters that end up smaller than ``min_size`` are dropped one at a time (smallest
        first); dropping a cluster moves only its own rows, to their next most responsible
        cluster, so every other cluster can only grow and the loop ends.

        Returns:
            The model and the ``(n,)`` final cluster ids ``0..p-1`` (equal to
            :meth:`assign` of ``Z``).
        """
        ids = np.unique(labels)
        centroids = np.stack([Z[labels == c].mean(axis=0) for c in ids])
        s2 = np.array([np.mean(np.sum((Z[labels == c] - centroids[i]) ** 2, axis=1)) for i, c in enumerate(ids)])
        s2 = np.maximum(s2, 1e-12 * max(1.0, float(s2.mean())))
        model = cls(centroids=centroids, s2=s2)
        log_r = model.log_responsibility(Z)
        keep = np.ones(model.n_clusters, dtype=bool)
        while True:
            assigned = np.flatnonzero(keep)[np.argmax(log_r[:, keep], axis=1)]
            sizes = np.bincount(assigned, minlength=model.n_clusters)
            small = np.flatnonzero(keep & (sizes < min_size))
            if small.size == 0 or keep.sum() <= 1:
                break
            keep[small[np.argmin(sizes[small])]] = False
        final = cls(centroids=centroids[keep], s2=s2[keep])
        return final, final.assign(Z)

    def log_responsibility(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(m, p)`` unnormalised ``log r_c`` = ``-||z - mu_c||^2 / (2 s_c^2)``."""
        out = np.empty((Z.shape[0], self.n_clusters), dtype=np.float64)
        mu_sq = np.sum(self.centroids**2, axis=1)
        for start in range(0, Z.shape[0], _CHUNK_ROWS):
            z = Z[start : start + _CHUNK_ROWS]
            sq = np.sum(z**2, axis=1)[:, None] - 2.0 * z @ self.centroids.T + mu_sq[None, :]
            out[start : start + _CHUNK_ROWS] = -np.maximum(sq, 0.0) / (2.0 * self.s2[None, :])
        return out

    def responsibilities(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(m, p)`` soft memberships ``r_c(z)``, each row summing to 1."""
        log_r = self.log_responsibility(Z)
        log_r -= log_r.max(axis=1, keepdims=True)
        r = np.exp(log_r)
        return np.asarray(r / r.sum(axis=1, keepdims=True), dtype=np.float64)

    def assign(self, Z: NDArray[np.float64]) -> NDArray[np.int64]:
        """``(m,)`` cluster ids ``argmax_c r_c(z)``."""
        return np.asarray(np.argmax(self.log_responsibility(Z), axis=1), dtype=np.int64)


@dataclass(frozen=True)
class ClusterAssigner:
    """Assigns rows to the clusters of a fitted state: its feature space and cluster model, O(p d).

    Small enough to ship to every Spark task, so the engines assign rows where they lie.
    """

    space: FeatureSpace
    model: ClusterModel

    def __call__(self, X: NDArray[np.float64]) -> NDArray[np.int64]:
        """``(n,)`` cluster of each row of ``(n, d)`` embeddings (by responsibility)."""
        return self.model.assign(self.space.cluster_space(X))


def n_trainings(p: int, *, pairwise: bool, seeds: int = 1) -> int:
    """Model fits of one valuation: ``(2 + p + p(p-1)/2) * seeds``, or ``(2 + p) * seeds``."""
    return seeds * (2 + p + (p * (p - 1) // 2 if pairwise else 0))


def min_cluster_size(n_rows: int, min_cluster_frac: float) -> int:
    """Smallest cluster kept: ``min_cluster_frac`` of the rows, and at least 2.

    Two members are the least that gives every row a neighbour in its own cluster (stage 3).
    """
    return max(2, math.ceil(min_cluster_frac * n_rows))


def choose_n_clusters(
    n_rows: int,
    *,
    n_clusters: int | None,
    budget: int | None,
    pairwise: bool,
    seeds: int,
    min_cluster_frac: float,
) -> int:
    """Number of clusters p (spec section 2).

    ``n_clusters`` when given, else the largest p whose :func:`n_trainings` fits ``budget``;
    then capped so that p clusters of :func:`min_cluster_size` rows fit in ``n_rows``.

    Raises:
        InvalidInputError: the budget allows fewer than 2 clusters, or the rows do.

    Warns:
        EcovalWarning: when p is reduced to fit the rows.
    """
    if n_clusters is None:
        budget = 80 if budget is None else budget
        p = 0
        while n_trainings(p + 1, pairwise=pairwise, seeds=seeds) <= budget:
            p += 1
        if p < 2:
            raise InvalidInputError(
                f"budget {budget} allows {p} clusters; at least "
                f"{n_trainings(2, pairwise=pairwise, seeds=seeds)} trainings are needed for 2"
            )
    else:
        if n_clusters < 2:
            raise InvalidInputError(f"n_clusters must be at least 2; found {n_clusters}")
        p = n_clusters
    size = min_cluster_size(n_rows, min_cluster_frac)
    p_rows = n_rows // size
    if p_rows < 2:
        raise InvalidInputError(
            f"{n_rows} training rows are too few: 2 clusters of at least {size} rows need {2 * size} rows"
        )
    if p > p_rows:
        warnings.warn(
            f"{p} clusters asked for but {n_rows} rows hold at most {p_rows} clusters of {size} rows; using {p_rows}",
            EcovalWarning,
            stacklevel=3,
        )
        p = p_rows
    return p
