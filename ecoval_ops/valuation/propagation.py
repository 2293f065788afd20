"""Stage 3: from cluster values to row values, in and out of sample (spec sections 4 and 5).

No model is trained. For row i in cluster c, against the other members of c:

- ``s_ij = exp(-(dist_ij / h_c)^2)`` over its k nearest members, ``h_c`` the median neighbour
  distance in c;
- intrinsic value ``alpha_i = 2 agree_i - 1``, ``agree_i = sum_j s_ij [y_j = y_i] / sum_j s_ij``;
- redundancy ``rho_i = sum_j s_ij [y_j = y_i]`` and extrinsic multiplier
  ``beta_i = (1 + rho_i)^(gamma - 1)``;
- effective input ``x_i = alpha_i * beta_i``;
- empirical-Bayes cluster share ``share_c* = mu + lambda_c (phi_c / n_c - mu)``;
- row value ``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)``, ``kappa = c_kappa |mu|``;
- the label the neighbourhood supports, ``argmax_y sum_j w_ij [y_j = y]``, with its weighted
  share (the same weights as ``agree_i``): what a suspect row's label could be fixed to.

``kappa`` takes ``|mu|`` rather than the spec's ``mu``: when the full model is worse than the
prior (``mu < 0``) a signed kappa would reward rows whose labels disagree with their
neighbours, breaking monotonicity (invariant 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.production import ClusterGame

__all__ = [
    "NeighbourPropagator",
    "PropagationState",
    "RowInputs",
    "empirical_bayes_shares",
    "nearest_members",
    "neighbour_inputs",
    "neighbour_vote",
]

_CHUNK_ROWS = 2048


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


def nearest_members(
    Z_members: NDArray[np.float64],
    Z_query: NDArray[np.float64],
    k: int,
    exclude: NDArray[np.int64] | None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Distances and member indices of the k nearest members of each query row.

    ``exclude[q]`` is a member index that query q may not use (itself), or -1.
    Ties are broken by member index, so the result does not depend on chunking.
    """
    import torch

    members = torch.from_numpy(np.ascontiguousarray(Z_members, dtype=np.float64))
    member_sq = (members * members).sum(dim=1)
    dist = np.empty((Z_query.shape[0], k))
    index = np.empty((Z_query.shape[0], k), dtype=np.int64)
    for start in range(0, Z_query.shape[0], _CHUNK_ROWS):
        z = torch.from_numpy(np.ascontiguousarray(Z_query[start : start + _CHUNK_ROWS], dtype=np.float64))
        # |m|^2 - 2 z.m in one fused pass; |z|^2 is the same for every member of a row, so it is
        # added to the k chosen only: the (m, n) matrix is the cost at a million rows.
        partial = torch.addmm(member_sq[None, :], z, members.T, beta=1.0, alpha=-2.0)
        if exclude is not None:
            rows = np.flatnonzero(exclude[start : start + _CHUNK_ROWS] >= 0)
            partial[torch.from_numpy(rows), torch.from_numpy(exclude[start : start + _CHUNK_ROWS][rows])] = torch.inf
        part_partial, part_t = torch.topk(partial, k, dim=1, largest=False, sorted=False)
        part = part_t.numpy()
        part_sq = (part_partial + (z * z).sum(dim=1)[:, None]).clamp_min_(0.0).numpy()
        order = np.lexsort((part, part_sq), axis=1)
        index[start : start + _CHUNK_ROWS] = np.take_along_axis(part, order, axis=1)
        dist[start : start + _CHUNK_ROWS] = np.sqrt(np.take_along_axis(part_sq, order, axis=1))
    return dist, index


def neighbour_inputs(
    dist: NDArray[np.float64],
    same_label: NDArray[np.bool_],
    h: float,
    gamma: float,
) -> RowInputs:
    """``alpha``, ``beta`` and ``rho`` from the k nearest members of each row.

    Args:
        dist: ``(m, k)`` distances to the nearest members.
        same_label: ``(m, k)`` whether each neighbour carries the row's label.
        h: bandwidth ``h_c`` of the cluster (> 0).
        gamma: returns-to-scale exponent.

    ``agree_i`` is computed with weights rescaled by the nearest neighbour's so that a row far
    from all members (all ``s_ij`` underflowing) still gets the label vote of its neighbours.
    """
    scaled = (dist / h) ** 2
    s = np.exp(-scaled)
    w = np.exp(-(scaled - scaled.min(axis=1, keepdims=True)))
    agree = np.sum(w * same_label, axis=1) / np.sum(w, axis=1)
    rho = np.sum(s * same_label, axis=1)
    return RowInputs(alpha=2.0 * agree - 1.0, beta=(1.0 + rho) ** (gamma - 1.0), rho=rho)


def _vote_weights(dist: NDArray[np.float64], h: float) -> NDArray[np.float64]:
    scaled = (dist / h) ** 2
    return np.asarray(np.exp(-(scaled - scaled.min(axis=1, keepdims=True))), dtype=np.float64)


def neighbour_vote(
    dist: NDArray[np.float64], labels: NDArray[np.int64], h: float, n_classes: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The label the k nearest members support: ``argmax_y sum_j w_ij [y_j = y]`` and its share.

    Args:
        dist: ``(m, k)`` distances to the nearest members.
        labels: ``(m, k)`` their class codes.
        h: bandwidth ``h_c``.
        n_classes: K.

    Returns:
        ``(support, share)``: ``(m,)`` class codes (ties to the lower code) and
        ``sum_j w_ij [y_j = support_i] / sum_j w_ij``.
    """
    w = _vote_weights(dist, h)
    scores = np.stack([np.sum(w * (labels == c), axis=1) for c in range(n_classes)], axis=1)
    support = np.argmax(scores, axis=1).astype(np.int64)
    return support, np.take_along_axis(scores, support[:, None], axis=1)[:, 0] / np.sum(w, axis=1)


def empirical_bayes_shares(
    phi: NDArray[np.float64], phi_se: NDArray[np.float64], sizes: NDArray[np.int64], mu: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Shrink per-row cluster shares towards the mean per-row gain ``mu``.

    ``share_c = phi_c / n_c`` with standard error ``se_c / n_c``;
    ``tau^2 = max(0, var_c(share_c) - mean_c((se_c / n_c)^2))``,
    ``lambda_c = tau^2 / (tau^2 + (se_c / n_c)^2)`` (1 where the standard error is 0),
    ``share_c* = mu + lambda_c (share_c - mu)``.

    Returns:
        ``(share_c*, lambda_c)``, each ``(p,)``.
    """
    share = phi / sizes
    se2 = (phi_se / sizes) ** 2
    var = float(np.var(share, ddof=1)) if share.size > 1 else 0.0
    tau2 = max(0.0, var - float(se2.mean()))
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(se2 > 0, tau2 / (tau2 + se2), 1.0)
    return mu + lam * (share - mu), lam


@dataclass(frozen=True)
class PropagationState:
    """What stage 3 keeps to value rows in and out of sample.

    Attributes:
        Z: ``(n, q)`` member embeddings in the cluster space.
        y: ``(n,)`` member class codes.
        clusters: ``(n,)`` member cluster ids.
        h: ``(p,)`` bandwidths ``h_c``.
        k: ``(p,)`` neighbours used per cluster, ``min(k_neighbors, n_c - 1)``.
        share: ``(p,)`` shrunk shares ``share_c*``.
        shrink: ``(p,)`` empirical-Bayes weights ``lambda_c``.
        x_mean: ``(p,)`` in-sample ``mean_{j in c} x_j``.
        kappa: ``c_kappa |mu|``.
        gamma: returns-to-scale exponent.
    """

    Z: NDArray[np.float64]
    y: NDArray[np.int64]
    clusters: NDArray[np.int64]
    h: NDArray[np.float64]
    k: NDArray[np.int64]
    share: NDArray[np.float64]
    shrink: NDArray[np.float64]
    x_mean: NDArray[np.float64]
    kappa: float
    gamma: float

    @property
    def n_classes(self) -> int:
        """K: every class has training members, so the largest code plus one."""
        return int(self.y.max()) + 1

    def inputs(
        self,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        clusters: NDArray[np.int64],
        exclude: NDArray[np.int64] | None = None,
    ) -> RowInputs:
        """``alpha``, ``beta``, ``rho`` of rows ``(Z, y)`` assigned to ``clusters``.

        Args:
            Z: ``(m, q)`` rows in the cluster space.
            y: ``(m,)`` their class codes.
            clusters: ``(m,)`` their assigned clusters.
            exclude: ``(m,)`` index into the members of a row to leave out of its own
                neighbours (a training row valued out of sample), or -1 for none.
        """
        alpha, beta, rho, share = (np.empty(Z.shape[0]) for _ in range(4))
        support = np.empty(Z.shape[0], dtype=np.int64)
        for c in np.unique(clusters):
            rows = np.flatnonzero(clusters == c)
            members = np.flatnonzero(self.clusters == c)
            local_exclude = None
            if exclude is not None:
                local_exclude = np.full(rows.size, -1, dtype=np.int64)
                wanted = exclude[rows]
                local = np.clip(np.searchsorted(members, wanted), 0, members.size - 1)
                own = (wanted >= 0) & (members[local] == wanted)
                local_exclude[own] = local[own]
            dist, idx = nearest_members(self.Z[members], Z[rows], int(self.k[c]), local_exclude)
            same = self.y[members][idx] == y[rows][:, None]
            got = neighbour_inputs(dist, same, float(self.h[c]), self.gamma)
            alpha[rows], beta[rows], rho[rows] = got.alpha, got.beta, got.rho
            support[rows], share[rows] = neighbour_vote(dist, self.y[members][idx], float(self.h[c]), self.n_classes)
        return RowInputs(alpha=alpha, beta=beta, rho=rho, support=support, support_share=share)

    def values(self, inputs: RowInputs, clusters: NDArray[np.int64]) -> NDArray[np.float64]:
        """``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)``."""
        return self.share[clusters] + self.kappa * (inputs.x - self.x_mean[clusters])


class NeighbourPropagator:
    """Propagates cluster values to rows with within-cluster neighbours (spec section 4).

    Args:
        k_neighbors: neighbours per row, k. Default 10.
        c_kappa: ``kappa = c_kappa |mu|``. Default 5.0.
        empirical_bayes: shrink cluster shares towards ``mu``. Default True.
    """

    def __init__(self, *, k_neighbors: int = 10, c_kappa: float = 5.0, empirical_bayes: bool = True) -> None:
        self.k_neighbors = k_neighbors
        self.c_kappa = c_kappa
        self.empirical_bayes = empirical_bayes

    def fit(
        self,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        clusters: NDArray[np.int64],
        game: ClusterGame,
    ) -> tuple[PropagationState, RowInputs]:
        """Fit stage 3 on the n training rows; return the state and their row inputs."""
        p = game.phi.shape[0]
        sizes = np.bincount(clusters, minlength=p)
        k = np.minimum(self.k_neighbors, sizes - 1).astype(np.int64)
        h = np.empty(p)
        alpha, beta, rho, vote = (np.empty(Z.shape[0]) for _ in range(4))
        support = np.empty(Z.shape[0], dtype=np.int64)
        n_classes = int(y.max()) + 1 if y.size else 0
        for c in range(p):
            members = np.flatnonzero(clusters == c)
            own = np.arange(members.size, dtype=np.int64)
            dist, idx = nearest_members(Z[members], Z[members], int(k[c]), own)
            h[c] = _bandwidth(dist)
            got = neighbour_inputs(dist, y[members][idx] == y[members][:, None], h[c], game.returns_to_scale)
            alpha[members], beta[members], rho[members] = got.alpha, got.beta, got.rho
            support[members], vote[members] = neighbour_vote(dist, y[members][idx], h[c], n_classes)
        inputs = RowInputs(alpha=alpha, beta=beta, rho=rho, support=support, support_share=vote)
        mu = game.total_gain / Z.shape[0]
        if self.empirical_bayes:
            share, lam = empirical_bayes_shares(game.phi, game.phi_se, sizes, mu)
        else:
            share, lam = game.phi / sizes, np.ones(p)
        state = PropagationState(
            Z=Z,
            y=y,
            clusters=clusters,
            h=h,
            k=k,
            share=share,
            shrink=lam,
            x_mean=np.bincount(clusters, weights=inputs.x, minlength=p) / sizes,
            kappa=self.c_kappa * abs(mu),
            gamma=game.returns_to_scale,
        )
        return state, inputs


def _bandwidth(dist: NDArray[np.float64]) -> float:
    """Bandwidth ``h_c``: the median neighbour distance.

    The mean positive distance (or 1) when the median is 0, as in a cluster of exact
    duplicates, so that ``dist / h`` stays finite.
    """
    median = float(np.median(dist))
    if median > 0:
        return median
    positive = dist[dist > 0]
    return float(positive.mean()) if positive.size else 1.0
