"""Night over night: what each run's new rows look like, and when that is an alert.

For the rows a run values that no run had valued before (the night's new rows):

- ``night_rows``, ``night_suspect_share``, ``night_mean_percentile``;
- ``night_cluster_drift``: the total variation ``1/2 sum_c |share_new(c) - share_model(c)|``
  between the new rows' cluster shares and the model's training shares.

A night is an **alert** when its suspect share exceeds ``alert_suspect_share`` (default: twice
the model's in-sample share, and at least 5 points above it) or its drift exceeds
``alert_drift`` (default 0.2), once there are :data:`MIN_ALERT_ROWS` new rows (with fewer, one
odd row is a 100% share). The run gets the tag ``ecoval.alert`` with the reason, the CLI a
warning line and ``--json`` an ``alert`` field, and the Airflow DAG calls the table's notifiers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ecoval_ops.lakehouse.summary import ValueSummary
    from ecoval_ops.valuation import EcoVal

__all__ = [
    "MIN_ALERT_ROWS",
    "SUSPECT_MARGIN",
    "AlertRule",
    "Night",
    "PastRun",
    "alert_reason",
    "alert_rules",
    "cluster_drift",
    "night_figures",
]

SUSPECT_MARGIN = 0.05
"""The default suspect-share alert is at least this far above the model's in-sample share."""
MIN_ALERT_ROWS = 20
"""Nights with fewer new rows raise no alert: their shares are mostly sampling noise."""


@dataclass(frozen=True)
class PastRun:
    """One run of a table in its history: when, which mode, its ``night_*`` metrics, its alert."""

    run_id: str
    started_ms: int
    mode: str
    metrics: dict[str, float]
    alert: str | None


@dataclass(frozen=True)
class Night:
    """The figures of one run's new rows.

    Attributes:
        rows: new rows valued.
        suspect_share: their share flagged ``ecoval_suspect``.
        mean_percentile: their mean ``ecoval_percentile``.
        cluster_drift: total variation of their cluster shares against the model's.
        model_suspect_share: the model's in-sample suspect share (the reference).
    """

    rows: int
    suspect_share: float
    mean_percentile: float
    cluster_drift: float
    model_suspect_share: float

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics (``night_*``)."""
        return {f"night_{k}": float(v) for k, v in asdict(self).items()}


def cluster_drift(counts: NDArray[np.int64], model_share: NDArray[np.float64]) -> float:
    """``1/2 sum_c |share_new(c) - share_model(c)|``: total variation of rows per cluster against the model's shares."""
    total = int(np.sum(counts))
    if total == 0:
        return 0.0
    return float(0.5 * np.abs(np.asarray(counts, dtype=np.float64) / total - model_share).sum())


def night_figures(summary: ValueSummary, ev: EcoVal) -> Night:
    """The figures of the run's new rows (no run had valued them before; ``ecoval_new``).

    Args:
        summary: the run's value columns, summarised by the engine.
        ev: the valuation model the values come from.
    """
    new = summary.new_rows()
    model_suspect = float(ev.result_.suspect.mean())
    rows = int(new["rows"].sum())
    if not rows:
        return Night(0, 0.0, 0.0, 0.0, model_suspect)
    counts = np.zeros(ev.n_clusters_, dtype=np.int64)
    counts[new.index.to_numpy(dtype=np.int64)] = new["rows"].to_numpy()
    return Night(
        rows=rows,
        suspect_share=float(new["suspects"].sum()) / rows,
        mean_percentile=float(new["percentile_sum"].sum()) / rows,
        cluster_drift=cluster_drift(counts, ev.model_.training_shares()),
        model_suspect_share=model_suspect,
    )


@dataclass(frozen=True)
class AlertRule:
    """One rule of a night's alert, as checked.

    Attributes:
        metric: the night's figure it bounds (``night_suspect_share``, ``night_cluster_drift``).
        column: the value column the figure is computed from.
        threshold: the largest value that passes.
        value: the night's value.
        passed: False when the rule raises the alert (a night under :data:`MIN_ALERT_ROWS` passes).
        reason: why it failed, in words; empty when it passed.
    """

    metric: str
    column: str
    threshold: float
    value: float
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (XCom, lineage)."""
        return asdict(self)


def alert_rules(night: Night, *, suspect_share: float | None, drift: float) -> list[AlertRule]:
    """The night's two alert rules, checked.

    Args:
        night: the night's figures.
        suspect_share: the suspect-share threshold; None takes
            ``max(2 model share, model share + SUSPECT_MARGIN)``.
        drift: the cluster-drift threshold.
    """
    limit = (
        max(2 * night.model_suspect_share, night.model_suspect_share + SUSPECT_MARGIN)
        if suspect_share is None
        else suspect_share
    )
    judged = night.rows >= MIN_ALERT_ROWS
    suspect_fails = judged and night.suspect_share > limit
    drift_fails = judged and night.cluster_drift > drift
    return [
        AlertRule(
            "night_suspect_share",
            "ecoval_suspect",
            limit,
            night.suspect_share,
            not suspect_fails,
            f"{night.suspect_share:.1%} of the {night.rows} new rows are suspect (threshold {limit:.1%}; "
            f"the model's own rows {night.model_suspect_share:.1%})"
            if suspect_fails
            else "",
        ),
        AlertRule(
            "night_cluster_drift",
            "ecoval_cluster",
            drift,
            night.cluster_drift,
            not drift_fails,
            f"the {night.rows} new rows' cluster shares drift {night.cluster_drift:.2f} from the model's "
            f"(threshold {drift:.2f})"
            if drift_fails
            else "",
        ),
    ]


def alert_reason(rules: list[AlertRule]) -> str | None:
    """Why the night is an alert (the failed rules' reasons), or None."""
    return "; ".join(r.reason for r in rules if not r.passed) or None
