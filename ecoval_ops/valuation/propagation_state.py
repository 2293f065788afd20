"""The fitted stage 3 and its per-row formulas: a row's neighbours, its inputs, its value.

The formulas (``rho``, ``beta``, the vote's scores, ``alpha``) are those of
:mod:`ecoval_ops.valuation.propagation`, which fits this state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.neighbours import NeighbourIndex, load_index, side_by_side
from ecoval_ops.valuation.supervised import LabelPrior

__all__ = ["PropagationState", "RowInputs", "gather_inputs", "halo_members", "kernel", "label_scores", "redundancy"]


@dataclass(frozen=True)
class RowInputs:
    """Per-row inputs of the production function, each ``(m,)``.

    Attributes:
        alpha: intrinsic values in ``[-1, 1]``.
        beta: extrinsic multipliers in ``(0, 1]``.
        rho: redundancy ``sum_j s_ij [y_j = y_i]``.
        support: class code of the label the neighbours support (None where not computed).
        support_share: that label's weighted share of the neighbours, in ``[0, 1]``.
    """

    alpha: NDArray[np.float64]
    beta: NDArray[np.float64]
    rho: NDArray[np.float64]
    support: NDArray[np.int64] | None = None
    support_share: NDArray[np.float64] | None = None

    @property
    def x(self) -> NDArray[np.float64]:
        """Effective input ``x_i = alpha_i * beta_i``."""
        return self.alpha * self.beta


def kernel(dist: NDArray[np.float64], h: float) -> NDArray[np.float64]:
    """The neighbour kernel ``s_ij = exp(-(d_ij / h)^2)`` of distances ``dist`` at bandwidth ``h``."""
    return np.asarray(np.exp(-((dist / h) ** 2)), dtype=np.float64)


def redundancy(
    dist: NDArray[np.float64], same_label: NDArray[np.bool_], h: float, gamma: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(rho, beta)``: ``rho_i = sum_j s_ij [y_j = y_i]`` and ``beta_i = (1 + rho_i)^(gamma - 1)``.

    ``s_ij = exp(-(d_ij / h)^2)``.

    Args:
        dist: ``(m, k)`` distances to the row's nearest candidates in the supervised space.
        same_label: ``(m, k)`` whether each neighbour carries the row's label.
        h: bandwidth ``h_c`` of the cluster (> 0).
        gamma: returns-to-scale exponent.
    """
    rho = np.sum(kernel(dist, h) * same_label, axis=1)
    return rho, (1.0 + rho) ** (gamma - 1.0)


def label_scores(
    dist: NDArray[np.float64],
    labels: NDArray[np.int64],
    h: float,
    prior: NDArray[np.float64],
    prior_weight: float,
) -> NDArray[np.float64]:
    """``(m, K)`` class scores ``score_iy = (sum_j omega_ij [y_j = y] + m0 q_iy) / (k + m0)``.

    Args:
        dist: ``(m, k)`` distances to the nearest candidates in the supervised space.
        labels: ``(m, k)`` their class codes.
        h: bandwidth ``h'_c`` (> 0).
        prior: ``(m, K)`` prior class scores ``q_iy`` in ``[0, 1]``.
        prior_weight: ``m0`` >= 0.

    ``omega_ij = k w_ij / sum_j w_ij`` with weights rescaled by the nearest neighbour's, so that
    a row far from all candidates (every kernel value underflowing) still gets its neighbours' vote.
    """
    k = dist.shape[1]
    scaled = (dist / h) ** 2
    w = np.exp(-(scaled - scaled.min(axis=1, keepdims=True)))
    omega = k * w / w.sum(axis=1, keepdims=True)
    votes = np.stack([np.sum(omega * (labels == c), axis=1) for c in range(prior.shape[1])], axis=1)
    return np.asarray((votes + prior_weight * prior) / (k + prior_weight), dtype=np.float64)


def _local_exclude(wanted: NDArray[np.int64], pool: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions in ``pool`` (sorted member indices) of the ``wanted`` members, -1 where absent."""
    local = np.clip(np.searchsorted(pool, wanted), 0, pool.size - 1)
    return np.where((wanted >= 0) & (pool[local] == wanted), local, -1).astype(np.int64)


@dataclass(frozen=True)
class PropagationState:
    """What stage 3 keeps to value rows in and out of sample.

    Attributes:
        Z: ``(n, q)`` member embeddings in the cluster space.
        y: ``(n,)`` member class codes.
        clusters: ``(n,)`` member cluster ids.
        h: ``(p,)`` redundancy bandwidths ``h_c``.
        k: ``(p,)`` redundancy neighbours per cluster, ``min(k_neighbors, candidates - 1)``.
        halo: ``(p, H)`` the clusters whose members are a row of c's candidates (c first).
        h_vote: ``(p,)`` vote bandwidths ``h'_c``.
        k_vote: ``(p,)`` vote neighbours per cluster, ``min(vote_neighbors, candidates - 1)``.
        metric: ``(q,)`` feature weights ``w`` of the supervised space.
        prior_frequencies: ``(q, D)`` random-feature frequencies ``Omega`` of the prior.
        prior_phases: ``(D,)`` their phases ``b``.
        prior_coef: ``(p, D, K)`` leave-cluster-out ridge coefficients ``W_c``.
        prior_intercept: ``(p, K)`` their intercepts ``b_c``.
        share: ``(p,)`` shrunk shares ``share_c* = m_c + lambda_c (phi_c / n_c - m_c)``, their
            target ``m_c`` following ``x_mean`` (:meth:`centred`).
        shrink: ``(p,)`` empirical-Bayes weights ``lambda_c``.
        x_mean: ``(p,)`` in-sample ``mean_{j in c} x_j``.
        kappa: ``c_kappa max(|mu|, the shares' per-row noise)``.
        gamma: returns-to-scale exponent.
        prior_weight: ``m0``, the prior's weight in pseudo-neighbours.
        sizes: ``(p,)`` ``n_c``, every training row of each cluster (the members are the
            reference set, all of them or a sample; spec section 5b).
        index_bytes: each cluster's saved :class:`~ecoval_ops.valuation.neighbours.NeighbourIndex`
            over its candidates, one after the other (none for an exact one).
        index_offsets: ``(p + 1,)`` where each cluster's bytes start.
        recall: ``(p,)`` each index's recall@k measured at build (NaN for an exact one).
        per_cluster: hold the neighbour indexes of the last :meth:`inputs` call's clusters only.
            For a pass whose batches come grouped by cluster (Spark's row pass): a worker then
            holds one cluster's index, not every cluster's (at 200,000 members they come to
            about 150 MB, as much again as the members). Batches that hold every cluster keep
            every index either way.
    """

    Z: NDArray[np.float64]
    y: NDArray[np.int64]
    clusters: NDArray[np.int64]
    h: NDArray[np.float64]
    k: NDArray[np.int64]
    halo: NDArray[np.int64]
    h_vote: NDArray[np.float64]
    k_vote: NDArray[np.int64]
    metric: NDArray[np.float64]
    prior_frequencies: NDArray[np.float64]
    prior_phases: NDArray[np.float64]
    prior_coef: NDArray[np.float64]
    prior_intercept: NDArray[np.float64]
    share: NDArray[np.float64]
    shrink: NDArray[np.float64]
    x_mean: NDArray[np.float64]
    kappa: float
    gamma: float
    prior_weight: float
    sizes: NDArray[np.int64]
    index_bytes: NDArray[np.uint8]
    index_offsets: NDArray[np.int64]
    recall: NDArray[np.float64]
    per_cluster: bool = field(default=False, compare=False)
    _indexes: dict[int, NeighbourIndex] = field(default_factory=dict, compare=False, repr=False)

    @property
    def prior(self) -> LabelPrior:
        """The supervised metric and the leave-cluster-out class scores."""
        return LabelPrior(
            weights=self.metric,
            frequencies=self.prior_frequencies,
            phases=self.prior_phases,
            coef=self.prior_coef,
            intercept=self.prior_intercept,
        )

    def candidates(self, cluster: int) -> NDArray[np.int64]:
        """Sorted indices of the members a row of ``cluster`` is compared with: its halo's members."""
        return halo_members(self.clusters, self.halo[cluster])

    def index(self, cluster: int) -> NeighbourIndex:
        """The search over ``cluster``'s candidates in the supervised space, loaded once."""
        if cluster not in self._indexes:
            members = self.prior.space(self.Z[self.candidates(cluster)])
            saved = self.index_bytes[self.index_offsets[cluster] : self.index_offsets[cluster + 1]]
            self._indexes[cluster] = load_index(members, saved, float(self.recall[cluster]))
        return self._indexes[cluster]

    def index_kinds(self) -> list[str]:
        """``(p,)`` each cluster's search, ``exact`` or ``approx``."""
        return ["exact" if size == 0 else "approx" for size in np.diff(self.index_offsets)]

    def neighbours(
        self, Z: NDArray[np.float64], cluster: int, exclude: NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The nearest candidates of rows ``Z`` of ``cluster``, as many as redundancy or the vote uses.

        Returns:
            Distances in the supervised space and member indices, nearest first; the first
            ``k[cluster]`` serve the redundancy, the first ``k_vote[cluster]`` the vote.
            ``exclude`` as in :meth:`inputs`.
        """
        pool = self.candidates(cluster)
        local = None if exclude is None else _local_exclude(exclude, pool)
        wanted = int(max(self.k[cluster], self.k_vote[cluster]))
        dist, index = self.index(cluster).search(self.prior.space(Z), wanted, local)
        return dist, pool[index]

    def inputs(
        self,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        clusters: NDArray[np.int64],
        exclude: NDArray[np.int64] | None = None,
    ) -> RowInputs:
        """``alpha``, ``beta``, ``rho`` and the supported label of rows ``(Z, y)`` in ``clusters``.

        Args:
            Z: ``(m, q)`` rows in the cluster space.
            y: ``(m,)`` their class codes.
            clusters: ``(m,)`` their assigned clusters.
            exclude: ``(m,)`` index into the members of a row to leave out of its own
                neighbours (a training row valued out of sample), or -1 for none.
        """

        def one(c: int) -> tuple[NDArray[np.intp], RowInputs]:
            rows = np.flatnonzero(clusters == c)
            dist, index = self.neighbours(Z[rows], c, None if exclude is None else exclude[rows])
            return rows, self._cluster_inputs(c, Z[rows], y[rows], dist, self.y[index])

        present = [int(c) for c in np.unique(clusters)]
        if self.per_cluster:
            for gone in set(self._indexes) - set(present):
                del self._indexes[gone]
        return gather_inputs(Z.shape[0], side_by_side(one, present))

    def _cluster_inputs(
        self,
        c: int,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        dist: NDArray[np.float64],
        labels: NDArray[np.int64],
    ) -> RowInputs:
        """The inputs of rows ``(Z, y)`` of cluster ``c`` from their nearest candidates (:meth:`neighbours`)."""
        k, k_vote = int(self.k[c]), int(self.k_vote[c])
        rho, beta = redundancy(dist[:, :k], labels[:, :k] == y[:, None], float(self.h[c]), self.gamma)
        scores = label_scores(
            dist[:, :k_vote], labels[:, :k_vote], float(self.h_vote[c]), self.prior.scores(Z, c), self.prior_weight
        )
        at = np.arange(y.size)
        support = np.argmax(scores, axis=1).astype(np.int64)
        return RowInputs(
            alpha=2.0 * scores[at, y] - 1.0, beta=beta, rho=rho, support=support, support_share=scores[at, support]
        )

    def values(self, x: NDArray[np.float64], clusters: NDArray[np.int64]) -> NDArray[np.float64]:
        """``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)`` of effective inputs ``x``."""
        return self.share[clusters] + self.kappa * (x - self.x_mean[clusters])

    def centred(self, x_sum: NDArray[np.float64]) -> PropagationState:
        """The state with ``mean_{j in c} x_j = x_sum_c / n_c``, ``x_sum`` summed over every training row of c.

        At scale a distributed pass sums ``x_i`` per cluster (spec section 5b), so that
        ``sum_{i in c} v_i = n_c share_c*`` holds over all rows (invariant 1). The shares'
        target ``m_c = mu + kappa (mean_{j in c} x_j - mean_j x_j)`` moves with the means, and
        ``share_c*`` by ``1 - lambda_c`` times as much (:func:`share_target`).
        """
        x_mean = np.asarray(x_sum, dtype=np.float64) / self.sizes
        moved = share_target(self.kappa, x_mean, self.sizes) - share_target(self.kappa, self.x_mean, self.sizes)
        return dataclasses.replace(self, x_mean=x_mean, share=self.share + (1.0 - self.shrink) * moved)


def share_target(kappa: float, x_mean: NDArray[np.float64], sizes: NDArray[np.int64]) -> NDArray[np.float64]:
    """``m_c - mu = kappa (mean_{j in c} x_j - mean_j x_j)``: the cluster's share as its rows' inputs tell it.

    The empirical-Bayes shares shrink towards ``m_c`` where the spec shrinks towards ``mu``: a
    cluster share that cannot be told from noise (``lambda_c`` near 0) then gives the values
    ``mu + kappa (x_i - mean_j x_j)``, the rows' own inputs across clusters too, where ``mu``
    would centre each cluster's rows on it and lose what the inputs say between clusters. On
    the quality protocols (seeds 0-4 / 5-9) detection AUROC rises by up to 0.009 / 0.016
    (phoneme). ``lambda_c`` is still measured about ``mu``, so shares that pass through
    (``lambda_c = 1``) are the spec's, and the targets sum to ``n mu``.
    """
    centred = x_mean - float(np.dot(sizes, x_mean)) / float(np.sum(sizes))
    return np.asarray(kappa * centred, dtype=np.float64)


def halo_members(clusters: NDArray[np.int64], halo: NDArray[np.int64]) -> NDArray[np.int64]:
    """Sorted indices of the members whose cluster is in ``halo``."""
    return np.flatnonzero(np.isin(clusters, halo)).astype(np.int64)


def gather_inputs(n: int, parts: list[tuple[NDArray[np.intp], RowInputs]]) -> RowInputs:
    """One :class:`RowInputs` of ``n`` rows from the inputs of disjoint row sets."""
    alpha, beta, rho, share = (np.empty(n) for _ in range(4))
    support = np.empty(n, dtype=np.int64)
    for rows, got in parts:
        alpha[rows], beta[rows], rho[rows] = got.alpha, got.beta, got.rho
        support[rows], share[rows] = np.asarray(got.support), np.asarray(got.support_share)
    return RowInputs(alpha=alpha, beta=beta, rho=rho, support=support, support_share=share)
