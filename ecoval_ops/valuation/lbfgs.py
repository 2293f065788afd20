"""Batched L-BFGS: M independent smooth problems minimised at once (method spec section 3).

The optimiser of :class:`~ecoval_ops.valuation.trainer.SoftmaxRegression`: every masked model
keeps its own curvature pairs, step length and stopping test, but all of them are evaluated in
one batched call, so a stage of leave-cluster-out trainings is one tensor program.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["LbfgsMemory", "batched_lbfgs"]


@dataclass(frozen=True)
class LbfgsMemory:
    """Curvature pairs ``(s, y, 1 / s.y)`` and the initial inverse-Hessian scale per model."""

    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    scale: torch.Tensor


def batched_lbfgs(
    objective: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    history: int = 20,
    memory: LbfgsMemory | None = None,
    inverse_diagonal: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LbfgsMemory]:
    """Minimise M independent smooth functions at once, each with its own L-BFGS state.

    Args:
        objective: maps the points ``x [m, P]`` of the models ``idx [m]`` to their values
            ``[m]`` and gradients ``[m, P]`` (one batched evaluation of a subset).
        x0: ``[M, P]`` starting points.
        tol: model m stops once ``max |grad_m| <= tol``.
        max_iter: iterations at most.
        history: curvature pairs kept per model.
        memory: curvature pairs to start from, for example those of the all-rows model, whose
            Hessian the masked models nearly share; ``None`` starts with a scaled gradient step.
        inverse_diagonal: ``[M, P]`` initial inverse-Hessian diagonal (a diagonal
            preconditioner); ``None`` uses the identity.

    Returns:
        The ``[M, P]`` minimisers and the final curvature memory.

    Each iteration evaluates the models still running once when all accept their full
    quasi-Newton step (the usual case near a warm start); those that fail the Armijo test halve
    their own step and only they are evaluated again, at most 30 times. A model that cannot
    decrease any further, or whose gradient is small enough, is frozen and no longer evaluated,
    so the cost is the sum of the models' iterations, not M times the slowest one's.
    """
    import torch

    x = x0.clone()
    M = x.shape[0]
    f, g = objective(x, torch.arange(M, device=x.device))
    h0 = torch.ones_like(x) if inverse_diagonal is None else inverse_diagonal
    if memory is None:
        pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        scale = (
            1.0 / g.abs().sum(dim=1).clamp_min(1.0)
            if inverse_diagonal is None
            else torch.ones(M, dtype=x.dtype, device=x.device)
        )
    else:
        pairs = [(s.expand(M, -1), yv.expand(M, -1), rho.expand(M)) for s, yv, rho in memory.pairs]
        scale = memory.scale.expand(M).clone()
    active = g.abs().amax(dim=1) > tol
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        q = g.clone()
        alphas = []
        for s, yv, rho in reversed(pairs):
            a = rho * (s * q).sum(dim=1)
            q -= a[:, None] * yv
            alphas.append(a)
        r = q * h0 * scale[:, None]
        for (s, yv, rho), a in zip(pairs, reversed(alphas), strict=True):
            r += (a - rho * (yv * r).sum(dim=1))[:, None] * s
        direction = torch.where(active[:, None], -r, torch.zeros_like(r))
        slope = (g * direction).sum(dim=1)
        active &= slope < 0
        pending = active.clone()
        step = torch.ones(M, dtype=x.dtype, device=x.device)
        f_new, g_new, x_new = f, g, x
        for _ in range(30):
            idx = pending.nonzero().squeeze(1)
            x_try = x[idx] + step[idx, None] * direction[idx]
            f_try, g_try = objective(x_try, idx)
            ok = f_try <= f[idx] + 1e-4 * step[idx] * slope[idx]
            accepted = idx[ok]
            f_new, g_new, x_new = f_new.clone(), g_new.clone(), x_new.clone()
            f_new[accepted], g_new[accepted], x_new[accepted] = f_try[ok], g_try[ok], x_try[ok]
            pending[accepted] = False
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        active &= ~pending
        s_k, y_k = x_new - x, g_new - g
        sy, yy = (s_k * y_k).sum(dim=1), (y_k * y_k).sum(dim=1)
        # A pair without positive curvature gets rho = 0, which makes it a no-op in the
        # two-loop recursion for that model only.
        good = sy > 1e-10 * yy.sqrt() * (s_k * s_k).sum(dim=1).sqrt()
        if bool(good.any()):
            rho = torch.where(good, 1.0 / torch.where(good, sy, torch.ones_like(sy)), torch.zeros_like(sy))
            pairs.append((s_k, y_k, rho))
            yhy = (y_k * h0 * y_k).sum(dim=1)
            scale = torch.where(good, sy / torch.where(good, yhy, torch.ones_like(yhy)), scale)
            if len(pairs) > history:
                pairs.pop(0)
        x, f, g = x_new, f_new, g_new
        active &= g.abs().amax(dim=1) > tol
    return x, LbfgsMemory(pairs=pairs, scale=scale)
