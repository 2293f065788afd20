"""What a run leaves for people, put together: the figures of :mod:`ecoval_ops.reporting`, published to MLflow.

The removal curve is computed at ``fit_model`` (it needs the training rows) and saved beside the
model in the run's workspace; ``report`` calls :func:`publish`, which logs the run's figures,
the night's figures and alert (:mod:`ecoval_ops.reporting.night`) and the review's files
(:mod:`ecoval_ops.reporting.pages`) to the parent run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ecoval_ops.lakehouse.summary import ValueSummary
    from ecoval_ops.pipeline.pinned import PinnedRun
    from ecoval_ops.reporting.figures import Diagnostics
    from ecoval_ops.tracking import ValuationTracker
    from ecoval_ops.valuation import EcoVal, TrainingPlan
    from ecoval_ops.valuation.quarantine import Cut
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = ["REMOVAL_ROWS", "log_review", "publish", "removal_curve"]

REMOVAL_ROWS = 20_000
"""Most training rows the review's removal curve retrains on (a seeded sample beyond that)."""


def removal_curve(plan: TrainingPlan, ev: EcoVal, *, seed: int) -> RemovalCurve:
    """Validation accuracy after removing the highest / lowest-valued rows of the training sample (for review).

    The rows are the plan's training sample (reference rows, standardised), at most
    :data:`REMOVAL_ROWS` of them, with their values from the fitted state. The shares are the
    curve's and the quarantine preview's cuts; one more training drops the suspects.
    """
    from ecoval_ops.valuation.quarantine import PREVIEW_PERCENTS
    from ecoval_ops.valuation.removal import SHARES
    from ecoval_ops.valuation.removal import removal_curve as curve

    rows = np.arange(plan.y.size)
    if rows.size > REMOVAL_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, REMOVAL_ROWS, replace=False))
    return curve(
        plan.X[rows],
        plan.y[rows],
        ev.values_[plan.sample[rows]],
        plan.X_val,
        plan.y_val,
        n_classes=ev.classes_.size,
        shares=tuple(sorted(set(SHARES) | {p / 100 for p in PREVIEW_PERCENTS})),
        seed=seed,
        drop=ev.result_.suspect[plan.sample[rows]],
    )


def log_review(
    tracker: ValuationTracker,
    run_id: str,
    summary: ValueSummary,
    ev: EcoVal,
    curve: RemovalCurve | None,
    diagnostics: Diagnostics,
    *,
    key: str,
    seed: int,
    table: str,
    version: int,
    columns: tuple[str, ...] | None = None,
    preview: list[Cut] | None = None,
) -> None:
    """Write the review artifacts and log them under ``review/`` of the parent run.

    ``trend.png`` plots the table's last 30 runs (this one included) from MLflow's history;
    ``columns`` of ``table@version`` are shown beside the top and bottom rows; ``preview`` adds the
    quarantine preview's plot and table.
    """
    from ecoval_ops.lakehouse.source import rows_of
    from ecoval_ops.reporting.pages import write_review
    from ecoval_ops.reporting.plots import figure_png, trend_plot

    source = None
    if columns:
        source = rows_of(table, version, key, columns, summary.top_bottom[key].to_numpy()).to_pandas()
    members = (ev.model_.member_embeddings(), ev.model_.members.values, ev.model_.members.suspect)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "review"
        write_review(
            folder,
            histogram=summary.coarse_histogram(),
            clusters=summary.clusters(),
            top_bottom=summary.top_bottom,
            key=key,
            members=members,
            curve=curve,
            diagnostics=diagnostics,
            seed=seed,
            source=source,
            preview=preview,
        )
        history = tracker.history(table)
        if history:
            (folder / "trend.png").write_bytes(figure_png(trend_plot(history)))
        tracker.log_artifacts(run_id, folder, "review")


def publish(
    run: PinnedRun,
    run_id: str,
    summary: ValueSummary,
    ev: EcoVal,
    *,
    curve: RemovalCurve | None,
    refit: bool,
    extra: dict[str, float] | None,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Log a run's figures as metrics, its alert and ``tags`` as tags, and its review artifacts.

    A clipped Gamma sets the tag ``ecoval.warning``; an alert, ``ecoval.alert``.

    Returns:
        :func:`~ecoval_ops.reporting.figures.run_figures`, with the night's figures (``night``),
        its alert (``alert``, None when there is none), the alert's rules as checked (``alert_rules``,
        :class:`~ecoval_ops.reporting.night.AlertRule` dicts) and the quarantine preview of
        the run's rows (``preview``, :class:`~ecoval_ops.valuation.quarantine.Cut` dicts).
    """
    from ecoval_ops.reporting.figures import Diagnostics, run_figures, summary_line
    from ecoval_ops.reporting.night import alert_reason, alert_rules, night_figures
    from ecoval_ops.tracking.runs import DESCRIPTION_TAG

    cfg, tracker = run.config, run.tracker
    diagnostics = Diagnostics.of(ev)
    figures = run_figures(summary, ev, diagnostics, refit=refit)
    night = night_figures(summary, ev)
    rules = alert_rules(night, suspect_share=cfg.alerts.alert_suspect_share, drift=cfg.alerts.alert_drift)
    alert = alert_reason(rules)
    figures["night"], figures["alert"] = night.metrics(), alert
    figures["alert_rules"] = [r.to_dict() for r in rules]
    preview = summary.preview(curve)
    figures["preview"] = [c.to_dict() for c in preview]
    tracker.log_metrics(
        run_id,
        {
            **figures["metrics"],
            **figures["night"],
            "trainings": float(figures["n_trainings"]),
            "rows_in_sample": float(figures["rows_in_sample"]),
            "rows_out_of_sample": float(figures["rows_out_of_sample"]),
            "suspect_share": figures["suspect_share"],
            **({"removal_accuracy_full": curve.full, "removal_accuracy_top20": curve.at(0.2)} if curve else {}),
            **(extra or {}),
        },
    )
    description = [
        summary_line("refit" if refit else "incremental", figures),
        "",
        f"{cfg.source.table}@v{run.table_version}",
    ]
    description += ["", f"**Alert**: {alert}"] if alert else []
    tracker.set_tags(run_id, {DESCRIPTION_TAG: "\n".join(description), **({"ecoval.alert": alert} if alert else {})})
    log_review(
        tracker,
        run_id,
        summary,
        ev,
        curve,
        diagnostics,
        key=cfg.source.key,
        seed=cfg.method.seed,
        table=str(cfg.source.table),
        version=run.table_version,
        columns=cfg.tracking.review_columns,
        preview=preview,
    )
    tracker.set_tags(
        run_id,
        {
            **tags,
            "ecoval.gammas_clipped": str(diagnostics.gammas_clipped).lower(),
            **({"ecoval.warning": diagnostics.warning} if diagnostics.warning else {}),
        },
    )
    return figures
