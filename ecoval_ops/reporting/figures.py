"""The figures of a run: the production function's diagnostics and what the run valued.

Computed once here; :mod:`ecoval_ops.tracking` publishes them (metrics, the registered version's
description), :mod:`.pages` renders them and the CLI prints their summary line.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ecoval_ops.lakehouse.summary import ValueSummary
    from ecoval_ops.valuation import EcoVal

__all__ = ["Diagnostics", "run_figures", "summary_line"]


@dataclass(frozen=True)
class Diagnostics:
    """The production function's fitted constants, for the diagnostics panel.

    Attributes:
        gamma_alpha: ``Gamma_alpha``.
        gamma_beta: ``Gamma_beta*``.
        gamma: returns to scale ``gamma``.
        gammas_clipped: a Gamma was clipped (efficiency then holds only roughly).
        shrinkage: empirical-Bayes weights ``lambda_c``, one per cluster.
        kappa: ``c_kappa |mu|``.
        utility_full: ``U(B)``.
        utility_empty: ``U(empty)``.
    """

    gamma_alpha: float
    gamma_beta: float
    gamma: float
    gammas_clipped: bool
    shrinkage: tuple[float, ...]
    kappa: float
    utility_full: float
    utility_empty: float

    @classmethod
    def of(cls, ev: EcoVal) -> Diagnostics:
        """The diagnostics of a fitted EcoVal."""
        game, figures = ev.model_.game, ev.model_.figures()
        return cls(
            gamma_alpha=float(game.gamma_alpha),
            gamma_beta=float(game.gamma_beta),
            gamma=float(game.returns_to_scale),
            gammas_clipped=bool(game.gammas_clipped),
            shrinkage=ev.model_.shrinkage(),
            kappa=figures["kappa"],
            utility_full=float(game.utility_full),
            utility_empty=float(game.utility_empty),
        )

    @property
    def warning(self) -> str | None:
        """The reviewer's warning, or None."""
        if not self.gammas_clipped:
            return None
        return (
            f"a Gamma was clipped (Gamma_alpha {self.gamma_alpha:.3g}, Gamma_beta* {self.gamma_beta:.3g}): the "
            "second-order model fits the diagonal poorly, so cluster values do not add up exactly to U(B) - U(empty)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the shrinkage summarised."""
        lam = np.asarray(self.shrinkage)
        return {
            "Gamma_alpha": self.gamma_alpha,
            "Gamma_beta*": self.gamma_beta,
            "gamma": self.gamma,
            "gammas_clipped": self.gammas_clipped,
            "shrinkage_lambda_min": float(lam.min()) if lam.size else None,
            "shrinkage_lambda_mean": float(lam.mean()) if lam.size else None,
            "shrinkage_lambda_max": float(lam.max()) if lam.size else None,
            "kappa": self.kappa,
            "U_B": self.utility_full,
            "U_empty": self.utility_empty,
            "warning": self.warning,
        }

    def to_html(self) -> str:
        """A small HTML panel; the warning, when any, first and in red."""
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.to_dict().items()
            if k != "warning"
        )
        warn = f'<p class="warning">Warning: {html.escape(self.warning)}</p>' if self.warning else ""
        return f"{warn}<table class=diagnostics>{rows}</table>"


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_figures(summary: ValueSummary, ev: EcoVal, diagnostics: Diagnostics, *, refit: bool) -> dict[str, Any]:
    """The figures of a run: rows by mode, suspect share, trainings, production-function metrics, reference size.

    Args:
        summary: the run's value columns, summarised by the engine.
        ev: the run's valuation model.
        diagnostics: its production-function diagnostics.
        refit: whether the run trained (an incremental run ran no training).
    """
    modes = summary.by_mode
    return {
        "rows_valued": summary.rows,
        "rows_in_sample": modes.get("in_sample", 0),
        "rows_out_of_sample": modes.get("out_of_sample", 0),
        "suspect_share": summary.suspects / summary.rows,
        "n_trainings": int(ev.n_trainings_) if refit else 0,
        "metrics": {
            "U_B": diagnostics.utility_full,
            "U_empty": diagnostics.utility_empty,
            "Gamma_alpha": diagnostics.gamma_alpha,
            "Gamma_beta": diagnostics.gamma_beta,
            "gamma": diagnostics.gamma,
            "p": float(ev.n_clusters_),
            **{k: v for k, v in ev.model_.figures().items() if k != "kappa"},
        },
    }


def summary_line(mode: str, figures: Mapping[str, Any]) -> str:
    """What a run valued, in one line: rows by mode, trainings, suspect share (the CLI's summary).

    Args:
        mode: ``refit`` or ``incremental``.
        figures: ``rows_valued``, ``rows_in_sample``, ``rows_out_of_sample``, ``n_trainings``
            and ``suspect_share`` (:func:`run_figures`, or a run's summary).
    """
    return (
        f"{mode}: {figures['rows_valued']} rows valued ({figures['rows_in_sample']} in sample, "
        f"{figures['rows_out_of_sample']} out of sample) with {figures['n_trainings']} trainings; "
        f"{figures['suspect_share']:.1%} flagged suspect"
    )
