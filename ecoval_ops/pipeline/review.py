"""The review a refit leaves for people: the removal curve and the MLflow ``review/`` artifacts.

The removal curve is computed at ``fit_model`` (it needs the training rows) and saved beside the
model in the run's workspace; ``report`` assembles the artifacts of
:mod:`ecoval_ops.tracking.review` from the run's values and logs them to the parent run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ecoval_ops.tracking import ValuationTracker
    from ecoval_ops.tracking.review import Diagnostics
    from ecoval_ops.valuation import EcoVal, TrainingPlan
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = ["REMOVAL_FILE", "REMOVAL_ROWS", "log_review", "removal_curve", "run_figures", "saved_curve"]

REMOVAL_FILE = "removal_curve.json"
"""The refit's point-removal curve, saved beside the model in the run's workspace."""
REMOVAL_ROWS = 20_000
"""Most training rows the review's removal curve retrains on (a seeded sample beyond that)."""


def removal_curve(
    plan: TrainingPlan, ev: EcoVal, X: NDArray[np.float64], y: NDArray[np.generic], *, seed: int
) -> RemovalCurve:
    """Validation accuracy after removing the highest / lowest-valued training rows (for review)."""
    from ecoval_ops.valuation.removal import removal_curve as curve

    rows = np.arange(len(y))
    if rows.size > REMOVAL_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, REMOVAL_ROWS, replace=False))
    return curve(
        plan.space.standardise(X[rows]),
        np.searchsorted(ev.classes_, y[rows]),
        ev.values_[rows],
        plan.X_val,
        plan.y_val,
        n_classes=ev.classes_.size,
        seed=seed,
    )


def saved_curve(path: Path) -> RemovalCurve | None:
    """The removal curve saved at ``path``; None when the run saved none."""
    from ecoval_ops.valuation.removal import RemovalCurve

    return RemovalCurve.from_dict(json.loads(path.read_text())) if path.exists() else None


def log_review(
    tracker: ValuationTracker,
    run_id: str,
    values: Any,
    ev: EcoVal,
    curve: RemovalCurve | None,
    diagnostics: Diagnostics,
    *,
    key: str,
    seed: int,
    table: str,
    version: int,
    columns: tuple[str, ...] | None = None,
) -> None:
    """Write the review artifacts and log them under ``review/`` of the parent run.

    ``trend.png`` plots the table's last 30 runs (this one included) from MLflow's history;
    ``columns`` of ``table@version`` are shown beside the top and bottom rows.
    """
    from ecoval_ops.lakehouse.source import rows_of
    from ecoval_ops.tracking.review import figure_png, top_bottom_rows, trend_plot, write_review

    source = None
    if columns:
        keys = top_bottom_rows(values, key)[key].to_numpy()
        source = rows_of(table, version, key, columns, keys).to_pandas()
    members = (ev.state_.Z, ev.values_, ev.result_.suspect)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "review"
        write_review(
            folder, values, key=key, members=members, curve=curve, diagnostics=diagnostics, seed=seed, source=source
        )
        history = tracker.history(table)
        if history:
            (folder / "trend.png").write_bytes(figure_png(trend_plot(history)))
        tracker.log_artifacts(run_id, folder, "review")


def run_figures(values: Any, ev: EcoVal, diagnostics: Diagnostics, *, refit: bool) -> dict[str, Any]:
    """The figures of a run: rows by mode, suspect share, trainings, production-function metrics.

    Args:
        values: the run's value columns (a pandas frame).
        ev: the run's valuation model.
        diagnostics: its production-function diagnostics.
        refit: whether the run trained (an incremental run ran no training).
    """
    modes = values["ecoval_mode"]
    return {
        "rows_valued": len(values),
        "rows_in_sample": int((modes == "in_sample").sum()),
        "rows_out_of_sample": int((modes == "out_of_sample").sum()),
        "suspect_share": float(values["ecoval_suspect"].mean()) if len(values) else 0.0,
        "n_trainings": int(ev.n_trainings_) if refit else 0,
        "metrics": {
            "U_B": diagnostics.utility_full,
            "U_empty": diagnostics.utility_empty,
            "Gamma_alpha": diagnostics.gamma_alpha,
            "Gamma_beta": diagnostics.gamma_beta,
            "gamma": diagnostics.gamma,
            "p": float(ev.n_clusters_),
        },
    }
