r"""Cluster values from the leave-out trainings: the production function (spec section 3).

Given the per-example utilities of the O(1) + O(p) + O(p^2) trainings, this module computes

- ``V_c = U(B) - U(B \ C_c)`` and ``I_cd = U(B) - U(B \ C_c) - U(B \ C_d) + U(B \ (C_c ∪ C_d))``,
  each shrunk by positive-part James-Stein ``D * max(0, 1 - se^2 / D^2)``;
- ``E_c = sum_{d != c} I_cd`` and the intrinsic cluster value ``a_c = V_c - E_c``;
- the correction factors ``Gamma_alpha`` and ``Gamma_beta*`` from the diagonal of the
  second-order (translog) production function at t = 1 and t = 1/2;
- ``phi_c = Gamma_alpha * a_c + Gamma_beta* * E_c / 2`` (exact Shapley value of any cluster game
  without interactions of order >= 3 when the Gammas are 1);
- the returns-to-scale exponent ``gamma = clip(log2((U(B) - U(0)) / (U(H) - U(0))), 0.05, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "GAMMA_CLIP",
    "ClusterGame",
    "LeaveOutUtilities",
    "SecondOrderProduction",
    "james_stein",
    "paired_mean_se",
]

GAMMA_CLIP = (0.25, 4.0)
RETURNS_CLIP = (0.05, 1.0)


@dataclass(frozen=True)
class LeaveOutUtilities:
    r"""Per-example validation utilities of the stage 1-2 models, each row ``(m,)``.

    Attributes:
        full: ``u_j(B)``, the model on all rows.
        half: ``u_j(H)``, the model on a cluster-stratified random half.
        empty: ``u_j(empty)``, the class-prior predictor.
        lco: ``(p, m)``: ``u_j(B \ C_c)``.
        pair: ``(p, p, m)`` symmetric: ``u_j(B \ (C_c ∪ C_d))`` for ``c != d``; ``None`` when
            the pairwise stage is off.
    """

    full: NDArray[np.float64]
    half: NDArray[np.float64]
    empty: NDArray[np.float64]
    lco: NDArray[np.float64]
    pair: NDArray[np.float64] | None


@dataclass(frozen=True)
class ClusterGame:
    """The fitted production function over clusters.

    Attributes:
        V: ``(p,)`` shrunk leave-cluster-out values ``V_c``.
        I: ``(p, p)`` shrunk pairwise interactions ``I_cd`` (zero diagonal; zeros without the
            pairwise stage).
        E: ``(p,)`` extrinsic totals ``E_c = sum_{d != c} I_cd``.
        a: ``(p,)`` intrinsic cluster values ``a_c = V_c - E_c``.
        gamma_alpha: ``Gamma_alpha``.
        gamma_beta: ``Gamma_beta*``.
        gammas_clipped: whether a Gamma was clipped to ``GAMMA_CLIP`` (the second-order model
            then fits the diagonal poorly and efficiency no longer holds exactly).
        returns_to_scale: ``gamma``.
        phi: ``(p,)`` cluster values ``phi_c``.
        phi_se: ``(p,)`` paired standard errors of ``phi_c``.
        utility_full: ``U(B)``.
        utility_half: ``U(H)``.
        utility_empty: ``U(empty)``.
    """

    V: NDArray[np.float64]
    I: NDArray[np.float64]
    E: NDArray[np.float64]
    a: NDArray[np.float64]
    gamma_alpha: float
    gamma_beta: float
    gammas_clipped: bool
    returns_to_scale: float
    phi: NDArray[np.float64]
    phi_se: NDArray[np.float64]
    utility_full: float
    utility_half: float
    utility_empty: float

    @property
    def total_gain(self) -> float:
        """``U(B) - U(empty)``: what the values of all rows add up to under efficiency."""
        return self.utility_full - self.utility_empty


def paired_mean_se(diffs: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and standard error over the last axis (the m validation rows).

    With a single validation row the standard error is 0: there is nothing to pair.
    """
    m = diffs.shape[-1]
    mean = diffs.mean(axis=-1)
    if m < 2:
        return mean, np.zeros_like(mean)
    return mean, diffs.std(axis=-1, ddof=1) / math.sqrt(m)


def james_stein(D: NDArray[np.float64], se: NDArray[np.float64]) -> NDArray[np.float64]:
    """Positive-part James-Stein shrinkage ``D * max(0, 1 - se^2 / D^2)``; 0 where D is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(D != 0, np.maximum(0.0, 1.0 - se**2 / D**2), 0.0)
    return D * factor


class SecondOrderProduction:
    """Second-order production function over clusters, fitted from leave-out utilities.

    Args:
        shrinkage: shrink each ``V_c`` and ``I_cd`` by James-Stein. Default True.
        correction: fit ``Gamma_alpha`` and ``Gamma_beta*``; False fixes both at 1, which makes
            ``phi`` the exact Shapley value of a quadratic cluster game. Default True.
    """

    def __init__(self, *, shrinkage: bool = True, correction: bool = True) -> None:
        self.shrinkage = shrinkage
        self.correction = correction

    def fit(self, u: LeaveOutUtilities) -> ClusterGame:
        """Compute ``V, I, E, a``, the Gammas, ``phi`` and ``gamma`` (see the module docstring)."""
        p = u.lco.shape[0]
        V_ex = u.full[None, :] - u.lco
        V, V_se = paired_mean_se(V_ex)
        if u.pair is None:
            I_ex = np.zeros((p, p, u.full.shape[0]))
        else:
            I_ex = u.full[None, None, :] - u.lco[:, None, :] - u.lco[None, :, :] + u.pair
            I_ex[np.arange(p), np.arange(p)] = 0.0
        I, I_se = paired_mean_se(I_ex)
        if self.shrinkage:
            V, I = james_stein(V, V_se), james_stein(I, I_se)
        E = I.sum(axis=1)
        a = V - E
        U_B, U_H, U_0 = float(u.full.mean()), float(u.half.mean()), float(u.empty.mean())
        gamma_alpha, gamma_beta, clipped = self._gammas(a, E, U_B - U_0, U_H - U_0)
        phi = gamma_alpha * a + gamma_beta * E / 2.0
        phi_ex = gamma_alpha * V_ex + (gamma_beta / 2.0 - gamma_alpha) * I_ex.sum(axis=1)
        _, phi_se = paired_mean_se(phi_ex)
        return ClusterGame(
            V=V,
            I=I,
            E=E,
            a=a,
            gamma_alpha=gamma_alpha,
            gamma_beta=gamma_beta,
            gammas_clipped=clipped,
            returns_to_scale=returns_to_scale(U_B - U_0, U_H - U_0),
            phi=phi,
            phi_se=phi_se,
            utility_full=U_B,
            utility_half=U_H,
            utility_empty=U_0,
        )

    def _gammas(
        self, a: NDArray[np.float64], E: NDArray[np.float64], delta_full: float, delta_half: float
    ) -> tuple[float, float, bool]:
        """Solve ``G(t) - G(0) = t Gamma_alpha A + t^2 Gamma_beta* S`` at t = 1 and t = 1/2.

        ``A = sum_c a_c``, ``S = (1/2) sum_c E_c``. The solution is
        ``Gamma_alpha = (4 dH - dB) / A`` and ``Gamma_beta* = 2 (dB - 2 dH) / S``; when it is
        singular or not finite, one ``Gamma = dB / (A + S)`` serves both. Each is clipped to
        ``GAMMA_CLIP``.
        """
        if not self.correction:
            return 1.0, 1.0, False
        A, S = float(a.sum()), float(E.sum()) / 2.0
        scale = max(abs(A), abs(S), abs(delta_full), 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            g_alpha = (4.0 * delta_half - delta_full) / A if A != 0 else math.nan
            g_beta = 2.0 * (delta_full - 2.0 * delta_half) / S if abs(S) > 1e-12 * scale else math.nan
            if not (math.isfinite(g_alpha) and math.isfinite(g_beta)):
                total = A + S
                g_alpha = g_beta = delta_full / total if total != 0 else 1.0
        lo, hi = GAMMA_CLIP
        clipped_alpha, clipped_beta = min(max(g_alpha, lo), hi), min(max(g_beta, lo), hi)
        return clipped_alpha, clipped_beta, (clipped_alpha, clipped_beta) != (g_alpha, g_beta)


def returns_to_scale(delta_full: float, delta_half: float) -> float:
    """Returns-to-scale exponent ``gamma = clip(log2(dB / dH), 0.05, 1)``.

    1 (constant returns) when the ratio is not positive and finite, since a half model no
    better than the prior says nothing of scale.
    """
    ratio = delta_full / delta_half if delta_half != 0 else math.nan
    if not (math.isfinite(ratio) and ratio > 0):
        return 1.0
    lo, hi = RETURNS_CLIP
    return min(max(math.log2(ratio), lo), hi)
