"""Stage 3: from cluster values to row values, in and out of sample (spec sections 4 and 5).

No model is trained. For row i in cluster c:

- the candidates: the other members of c, and of its ``halo_clusters`` nearest clusters (a
  halo, cluster means in ``Z``; none by default), in the supervised space ``S = Z * w``
  (:mod:`ecoval_ops.valuation.supervised`); one search finds the nearest of them for both of:
- redundancy, over its k nearest (``k_neighbors``, 10): ``s_ij = exp(-(dist_ij / h_c)^2)``,
  ``h_c`` the median of those distances in c, ``rho_i = sum_j s_ij [y_j = y_i]`` and
  ``beta_i = (1 + rho_i)^(gamma - 1)``;
- the label vote, over its ``vote_neighbors`` (20) nearest, with ``h'_c`` the median of those
  distances: ``w_ij = exp(-((d_ij / h'_c)^2 - min_j (d_ij / h'_c)^2))``,
  ``omega_ij = k w_ij / sum_j w_ij`` and the class scores, the prior ``q_iy`` of the
  leave-cluster-out fit counting as ``m0`` (``prior_weight``, 20) pseudo-neighbours:
  ``score_iy = (sum_j omega_ij [y_j = y] + m0 q_iy) / (k + m0)``;
- intrinsic value ``alpha_i = 2 agree_i - 1``, ``agree_i = score_{i, y_i}``; the label the vote
  supports, ``argmax_y score_iy``, with its score (what a suspect row's label could be fixed to);
- effective input ``x_i = alpha_i * beta_i``;
- empirical-Bayes cluster share ``share_c* = m_c + lambda_c (phi_c / n_c - m_c)``, towards the
  target ``m_c = mu + kappa (mean_{j in c} x_j - mean_j x_j)``
  (:func:`~ecoval_ops.valuation.propagation_state.share_target`);
- row value ``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)``,
  ``kappa = c_kappa max(|mu|, sqrt(mean_c (se_c / n_c)^2))`` (:func:`kappa_of`), ``c_kappa`` 20.

Departures from the spec's ``agree_i = sum_j s_ij [y_j = y_i] / sum_j s_ij`` over c's k members
nearest in ``Z`` (the supervised space, the larger vote, the prior, and the optional halo),
settled on the quality protocols (``BENCHMARKS.md``): a row's mislabelling shows best against
neighbours that share what predicts the label and against a model that never saw its cluster.
With ``prior_weight = 0`` and ``vote_neighbors = k_neighbors`` the vote is the spec's, in the
supervised space. Every invariant of spec section 6 holds: values stay linear in ``x_i`` and
centred per cluster (1), identical rows get identical neighbours and priors (3), ``v_i`` rises
with ``agree_i`` (4), ``beta`` is the spec's form (5), and a training row valued out of sample
leaves itself out of its neighbours and gets its cluster's prior (6).

The shares shrink towards ``m_c`` rather than the spec's ``mu``: where a cluster's measured
share is noise, what its rows' inputs say about it stands in, instead of centring its rows on
``mu``. ``lambda_c`` is the spec's, so shares that pass through are the spec's.

``kappa`` takes ``|mu|`` rather than the spec's ``mu``: when the full model is worse than the
prior (``mu < 0``) a signed kappa would reward rows whose labels disagree with their
neighbours, breaking monotonicity (invariant 4). It is floored at the shares' per-row noise, so
that a model no better than the prior leaves the rows' own inputs their weight.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.neighbours import NeighbourSearch, build_index, side_by_side
from ecoval_ops.valuation.production import ClusterGame
from ecoval_ops.valuation.propagation_state import PropagationState, RowInputs, gather_inputs, halo_members
from ecoval_ops.valuation.supervised import LabelPrior

__all__ = ["NeighbourPropagator", "empirical_bayes_shares", "kappa_of"]


def _bandwidth(dist: NDArray[np.float64]) -> float:
    """Bandwidth: the median neighbour distance.

    The mean positive distance (or 1) when the median is 0, as in a cluster of exact
    duplicates, so that ``dist / h`` stays finite.
    """
    median = float(np.median(dist))
    if median > 0:
        return median
    positive = dist[dist > 0]
    return float(positive.mean()) if positive.size else 1.0


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
    se2 = _share_variances(phi_se, sizes)
    var = float(np.var(share, ddof=1)) if share.size > 1 else 0.0
    tau2 = max(0.0, var - float(se2.mean()))
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(se2 > 0, tau2 / (tau2 + se2), 1.0)
    return mu + lam * (share - mu), lam


def kappa_of(c_kappa: float, mu: float, phi_se: NDArray[np.float64], sizes: NDArray[np.int64]) -> float:
    """``kappa = c_kappa max(|mu|, sqrt(mean_c (se_c / n_c)^2))``: the row term's weight against the shares.

    The floor is the shares' per-row noise. Where the full model gains about nothing per row over
    the prior (``mu`` within that noise), ``c_kappa |mu|`` vanishes and the values would be the
    cluster shares alone, noise and all: on one credit-default split (X1, seed 4) ``kappa`` was
    3e-6 and detection AUROC 0.497, against 0.741 for the rows' own inputs. With the floor X1's
    credit set goes from 0.690 to 0.736 (seeds 0-4) and P1 on seeds 5-9 from 0.952 to 0.962; the
    others, where ``|mu|`` is above the floor, keep their values.
    """
    noise = float(np.sqrt(np.mean(_share_variances(phi_se, sizes)))) if phi_se.size else 0.0
    return c_kappa * max(abs(mu), noise)


def _share_variances(phi_se: NDArray[np.float64], sizes: NDArray[np.int64]) -> NDArray[np.float64]:
    """``(se_c / n_c)^2``: the noise variance of each cluster's per-row share ``phi_c / n_c``."""
    return np.asarray((phi_se / sizes) ** 2, dtype=np.float64)


class NeighbourPropagator:
    """Propagates cluster values to rows with neighbours and a label prior (module docstring).

    Args:
        k_neighbors: within-cluster neighbours of the redundancy ``rho``, k. Default 10.
        vote_neighbors: neighbours of the label vote. Default 20.
        halo_clusters: nearest other clusters whose members join the candidates. Default 0.
        prior_weight: ``m0``, the leave-cluster-out prior in pseudo-neighbours. Default 20.0.
        c_kappa: ``kappa = c_kappa max(|mu|, the shares' per-row noise)`` (:func:`kappa_of`). Default 20.0.
        empirical_bayes: shrink cluster shares towards ``mu``. Default True.
        neighbour_search: ``exact``, ``approx`` or ``auto``
            (:mod:`~ecoval_ops.valuation.neighbours`). Default ``auto``.
        seed: draws the prior's random features. Default 0.
    """

    def __init__(
        self,
        *,
        k_neighbors: int = 10,
        vote_neighbors: int = 20,
        halo_clusters: int = 0,
        prior_weight: float = 20.0,
        c_kappa: float = 20.0,
        empirical_bayes: bool = True,
        neighbour_search: NeighbourSearch = "auto",
        seed: int = 0,
    ) -> None:
        self.k_neighbors = k_neighbors
        self.vote_neighbors = vote_neighbors
        self.halo_clusters = halo_clusters
        self.prior_weight = prior_weight
        self.c_kappa = c_kappa
        self.empirical_bayes = empirical_bayes
        self.neighbour_search = neighbour_search
        self.seed = seed

    def fit(
        self,
        Z: NDArray[np.float64],
        y: NDArray[np.int64],
        clusters: NDArray[np.int64],
        game: ClusterGame,
        *,
        sizes: NDArray[np.int64] | None = None,
    ) -> tuple[PropagationState, RowInputs]:
        """Fit stage 3 on the members (the reference rows); return the state and their row inputs.

        Each row is left out of its own neighbours, as a training row valued out of sample is
        (invariant 6); the bandwidths are the median distances of these neighbours.

        Args:
            Z: the members in the cluster space.
            y: their class codes.
            clusters: their clusters.
            game: the fitted cluster game.
            sizes: ``(p,)`` ``n_c``, every training row of each cluster when the members are a
                sample of them; default the members' own counts. ``mu`` divides by their sum.
                The state's ``x_mean`` is then the members' mean until :meth:`PropagationState.centred`.
        """
        p = game.phi.shape[0]
        counts = np.bincount(clusters, minlength=p)
        sizes = counts if sizes is None else np.asarray(sizes, dtype=np.int64)
        means = np.stack([Z[clusters == c].mean(axis=0) for c in range(p)])
        gaps = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
        halo = np.argsort(gaps, axis=1, kind="stable")[:, : min(1 + self.halo_clusters, p)].astype(np.int64)
        prior = LabelPrior.fit(Z, y, clusters, p, self.seed)
        candidates = np.array([int(counts[halo[c]].sum()) - 1 for c in range(p)])
        mu = game.total_gain / int(sizes.sum())
        if self.empirical_bayes:
            share, lam = empirical_bayes_shares(game.phi, game.phi_se, sizes, mu)
        else:
            share, lam = game.phi / sizes, np.ones(p)
        k, k_vote = np.minimum(self.k_neighbors, candidates), np.minimum(self.vote_neighbors, candidates)
        indexes = {
            c: build_index(
                prior.space(Z[halo_members(clusters, halo[c])]),
                self.neighbour_search,
                k=int(max(k[c], k_vote[c])),
                seed=self.seed,
            )
            for c in range(p)
        }
        saved = [indexes[c].to_bytes() for c in range(p)]
        state = PropagationState(
            Z=Z,
            y=y,
            clusters=clusters,
            h=np.ones(p),
            k=k.astype(np.int64),
            halo=halo,
            h_vote=np.ones(p),
            k_vote=k_vote.astype(np.int64),
            metric=prior.weights,
            prior_frequencies=prior.frequencies,
            prior_phases=prior.phases,
            prior_coef=prior.coef,
            prior_intercept=prior.intercept,
            share=share,
            shrink=lam,
            x_mean=np.zeros(p),
            kappa=kappa_of(self.c_kappa, mu, game.phi_se, sizes),
            gamma=game.returns_to_scale,
            prior_weight=float(self.prior_weight),
            sizes=sizes,
            index_bytes=np.concatenate(saved),
            index_offsets=np.concatenate([[0], np.cumsum([b.size for b in saved])]).astype(np.int64),
            recall=np.array([indexes[c].recall for c in range(p)]),
            _indexes=indexes,
        )

        # One search per cluster, each row left out: its distances give the bandwidths, then the inputs.
        def search(c: int) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.int64]]:
            members = np.flatnonzero(clusters == c)
            dist, index = state.neighbours(Z[members], c, members)
            return members, dist, y[index]

        found = side_by_side(search, list(range(p)))
        h = np.array([_bandwidth(dist[:, : state.k[c]]) for c, (_, dist, _) in enumerate(found)])
        h_vote = np.array([_bandwidth(dist[:, : state.k_vote[c]]) for c, (_, dist, _) in enumerate(found)])
        state = dataclasses.replace(state, h=h, h_vote=h_vote)

        def cluster_inputs(c: int) -> tuple[NDArray[np.intp], RowInputs]:
            rows, dist, labels = found[c]
            return rows, state._cluster_inputs(c, Z[rows], y[rows], dist, labels)

        inputs = gather_inputs(Z.shape[0], side_by_side(cluster_inputs, list(range(p))))
        x_mean = np.bincount(clusters, weights=inputs.x, minlength=p) / counts
        return state.centred(x_mean * sizes), inputs
