"""The refit policy: refit, value new rows incrementally, or do nothing (architecture.md, step 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError

if TYPE_CHECKING:
    from ecoval_ops.valuation import EcoVal

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
    new_embeddings: Callable[[], NDArray[np.float64]],
) -> Mode:
    """Refit or value new rows incrementally (``--refit auto|always|never``).

    Args:
        policy: the run's ``refit`` setting.
        n_new: rows no run has valued yet.
        table_rows: rows of the whole version.
        current: the registered valuation model, if any.
        new_embeddings: reads the new rows' embeddings, called only for the drift test (a
            first or a large night reads no embedding here).

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
    p = current.n_clusters_
    if n_new < DRIFT_MIN_ROWS_PER_CLUSTER * p:
        return "incremental"
    assigned = current.cluster_model_.assign(current.feature_space_.cluster_space(new_embeddings()))
    new_share = np.bincount(assigned, minlength=p) / assigned.size
    train_share = current.state_.sizes / current.state_.sizes.sum()
    return "refit" if 0.5 * np.abs(new_share - train_share).sum() > DRIFT_LIMIT else "incremental"
