"""The two row passes of a run, one batch at a time (spec section 5b; both engines).

A valuation values every row by one rule against the saved model, in batches that an engine
runs where the rows lie (in-process, or in Spark's ``mapInPandas`` on the executors):

1. :func:`input_batch`: each row's cluster, ``alpha``, ``beta`` and supported label. A
   training row that is a member of the state (a reference row, found by its draw) leaves
   itself out of its neighbours and is ``in_sample``; every other row is ``out_of_sample``.
   The per-cluster sums of ``x_i = alpha_i beta_i`` over the training rows centre the model
   (:meth:`~ecoval_ops.valuation.EcoVal.centre`).
2. :func:`value_batch`: the value columns of a batch of inputs against the centred model.

Only the inputs (a few numbers per row) lie between the passes, so the embeddings are searched
once and no pass gathers the rows in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.lakehouse.columns import NEW_COL
from ecoval_ops.valuation.reference import key_draws

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.valuation import EcoVal

__all__ = ["CLUSTER_COL", "INPUT_COLUMNS", "TRAINING_COL", "input_batch", "value_batch", "x_sums"]

CLUSTER_COL = "ecoval_cluster"
"""Each row's cluster in the inputs (and in the rows a Spark pass groups by it)."""

TRAINING_COL = "ecoval_training"
"""Whether a row of the inputs is a training row of the fit (its ``x`` centres the model)."""

INPUT_COLUMNS = {
    CLUSTER_COL: "int",
    "ecoval_intrinsic": "double",
    "ecoval_extrinsic": "double",
    "ecoval_support_share": "double",
    "ecoval_member": "boolean",
    TRAINING_COL: "boolean",
    NEW_COL: "boolean",
}
"""The inputs' columns besides the key and ``ecoval_support`` (of the labels' type), as Spark types."""


def input_batch(
    ev: EcoVal,
    keys: NDArray[Any],
    X: NDArray[np.float64],
    y: NDArray[Any],
    training: NDArray[np.bool_],
    new: NDArray[np.bool_],
    *,
    key: str,
) -> pa.Table:
    """The inputs of a batch of rows: ``key``, ``ecoval_support`` and :data:`INPUT_COLUMNS`.

    Args:
        ev: the model (after :meth:`~ecoval_ops.valuation.EcoVal.fit_reference`).
        keys: the rows' keys.
        X: their embeddings.
        y: their labels.
        training: which rows are training rows of the fit; only those can be members.
        new: which rows no run had valued before (:data:`~ecoval_ops.lakehouse.columns.NEW_COL`).
        key: the key column's name.
    """
    import pyarrow as pa

    member = np.where(training, ev.model_.member_positions(key_draws(keys, ev.seed)), -1)
    result = ev.value_rows(X, y, train_index=member)
    return pa.table(
        {
            key: pa.array(keys),
            "ecoval_support": pa.array(np.asarray(result.suggested_label)),
            CLUSTER_COL: pa.array(np.asarray(result.clusters), pa.int32()),
            "ecoval_intrinsic": pa.array(result.intrinsic, pa.float64()),
            "ecoval_extrinsic": pa.array(result.extrinsic, pa.float64()),
            "ecoval_support_share": pa.array(result.label_confidence, pa.float64()),
            "ecoval_member": pa.array(member >= 0, pa.bool_()),
            TRAINING_COL: pa.array(training, pa.bool_()),
            NEW_COL: pa.array(new, pa.bool_()),
        }
    )


def x_sums(inputs: pa.Table, p: int) -> NDArray[np.float64]:
    """``(p,)`` sums of ``x_i = alpha_i beta_i`` over the training rows of a batch of inputs, per cluster."""
    training = inputs.column(TRAINING_COL).to_numpy(zero_copy_only=False)
    clusters = inputs.column(CLUSTER_COL).to_numpy(zero_copy_only=False)[training]
    x = (
        inputs.column("ecoval_intrinsic").to_numpy(zero_copy_only=False)
        * inputs.column("ecoval_extrinsic").to_numpy(zero_copy_only=False)
    )[training]
    return np.bincount(clusters.astype(np.int64), weights=x, minlength=p).astype(np.float64)


def value_batch(
    ev: EcoVal, inputs: pa.Table, *, key: str, run_id: str, model_version: str, valued_at: datetime
) -> pa.Table:
    """The value columns (:func:`~ecoval_ops.lakehouse.columns.value_columns`) of a batch of inputs, and ``ecoval_new``.

    ``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)`` with the model's (centred) state;
    ``ecoval_mode`` is ``in_sample`` for members.
    """
    from ecoval_ops.lakehouse.columns import value_columns

    def column(name: str) -> NDArray[Any]:
        return np.asarray(inputs.column(name).to_numpy(zero_copy_only=False))

    clusters = column(CLUSTER_COL).astype(np.int64)
    alpha, beta = column("ecoval_intrinsic"), column("ecoval_extrinsic")
    result = ev.model_.result_of(alpha, beta, clusters, column("ecoval_support"), column("ecoval_support_share"))
    valued = value_columns(
        column(key),
        result,
        key=key,
        reference=ev.values_,
        run_id=run_id,
        model_version=model_version,
        valued_at=valued_at,
        in_sample=column("ecoval_member").astype(bool),
    )
    return valued.append_column(NEW_COL, inputs.column(NEW_COL))
