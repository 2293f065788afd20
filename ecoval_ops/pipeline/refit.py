"""The refit policy: refit, value new rows incrementally, or do nothing (architecture.md, step 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.reporting.night import cluster_drift

if TYPE_CHECKING:
    from ecoval_ops.valuation import EcoVal
    from ecoval_ops.valuation.clustering import ClusterAssigner

__all__ = ["DRIFT_LIMIT", "DRIFT_MIN_ROWS_PER_CLUSTER", "REFIT_SHARE", "Mode", "RefitPolicy", "decide_mode"]

REFIT_SHARE = 0.25
"""``refit=auto`` refits when new rows exceed this share of the valued rows."""
DRIFT_LIMIT = 0.2
"""``refit=auto`` refits when the new rows' cluster shares differ from the training shares by
more than this total-variation distance."""
DRIFT_MIN_ROWS_PER_CLUSTER = 10
"""The drift test needs this many new rows per cluster: with fewer, sampling noise alone moves
the shares past :data:`DRIFT_LIMIT` and every small nightly batch would refit."""

Mode = Literal["refit", "incremental", "noop"]
RefitPolicy = Literal["auto", "always", "never"]


def decide_mode(
    policy: RefitPolicy,
    n_new: int,
    table_rows: int,
    current: EcoVal | None,
    new_cluster_counts: Callable[[ClusterAssigner], NDArray[np.int64]],
) -> Mode:
    """Refit or value new rows incrementally (``--refit auto|always|never``).

    Args:
        policy: the run's ``refit`` setting.
        n_new: rows no run has valued yet.
        table_rows: rows of the whole version.
        current: the registered valuation model, if any.
        new_cluster_counts: counts the new rows per cluster of the model's assigner (the
            engine, where the rows lie), called only for the drift test (a first or a large
            night reads no embedding here).

    ``auto`` refits when there is no registered model, when new rows exceed
    :data:`REFIT_SHARE` of the valued rows, or when their cluster shares drift by more than
    :data:`DRIFT_LIMIT` (total variation) from the training shares, tested once there are
    :data:`DRIFT_MIN_ROWS_PER_CLUSTER` new rows per cluster.

    Raises:
        InvalidInputError: ``never`` without a registered model.
    """
    if policy == "always":
        return "refit"
    if n_new == 0:
        return "noop"
    if policy == "never":
        if current is None:
            raise InvalidInputError("refit=never but no valuation model is registered yet; run with --refit auto")
        return "incremental"
    if current is None or n_new > REFIT_SHARE * max(1, table_rows - n_new):
        return "refit"
    if n_new < DRIFT_MIN_ROWS_PER_CLUSTER * current.n_clusters_:
        return "incremental"
    drift = cluster_drift(new_cluster_counts(current.model_.assigner()), current.model_.training_shares())
    return "refit" if drift > DRIFT_LIMIT else "incremental"
