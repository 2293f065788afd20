"""The one result type of a valuation (pyDVL's ``ValuationResult``, architecture.md columns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Mode", "ValuationResult", "check_values"]

Mode = Literal["in_sample", "out_of_sample"]


def check_values(values: ArrayLike, n_rows: int, name: str = "values") -> NDArray[np.float64]:
    """Return ``values`` as a finite ``(n_rows,)`` float64 array, or raise ``ValueError``.

    Every valuation method passes its output through here, so a NaN never reaches a table.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n_rows,):
        raise ValueError(f"{name} has shape {arr.shape}; expected ({n_rows},)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(arr)))} non-finite entries")
    return arr


@dataclass(frozen=True)
class ValuationResult:
    """Per-row output of EcoVal, aligned with the rows it was given.

    Attributes:
        values: ``(n,)`` row values ``v_i`` in utility units.
        intrinsic: ``(n,)`` ``alpha_i``.
        extrinsic: ``(n,)`` ``beta_i``.
        clusters: ``(n,)`` cluster ids.
        cluster_values: ``(n,)`` ``phi_c`` of each row's cluster.
        mode: ``"in_sample"`` or ``"out_of_sample"``.
    """

    values: NDArray[np.float64]
    intrinsic: NDArray[np.float64]
    extrinsic: NDArray[np.float64]
    clusters: NDArray[np.int64]
    cluster_values: NDArray[np.float64]
    mode: Mode

    def __post_init__(self) -> None:
        n = np.asarray(self.values).shape[0]
        for name in ("values", "intrinsic", "extrinsic", "cluster_values"):
            object.__setattr__(self, name, check_values(getattr(self, name), n, name))
        clusters = np.asarray(self.clusters)
        if clusters.shape != (n,) or not np.issubdtype(clusters.dtype, np.integer):
            raise ValueError(f"clusters must be ({n},) integers; found {clusters.shape} {clusters.dtype}")
        object.__setattr__(self, "clusters", clusters.astype(np.int64))
        if self.mode not in ("in_sample", "out_of_sample"):
            raise ValueError(f"mode must be 'in_sample' or 'out_of_sample'; found {self.mode!r}")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def suspect(self) -> NDArray[np.bool_]:
        """``alpha_i < 0``: the row's label disagrees with its most similar rows."""
        return self.intrinsic < 0

    def to_arrow(self, keys: ArrayLike, key_name: str) -> pa.Table:
        """The row-level value columns of architecture.md, keyed by ``keys``.

        Table-level columns (percentile, run id, model version, timestamp) are added by the
        writer, which sees all valued rows.
        """
        import pyarrow as pa

        key_array = pa.array(np.asarray(keys))
        if len(key_array) != len(self):
            raise ValueError(f"{len(key_array)} keys for {len(self)} valued rows")
        return pa.table(
            {
                key_name: key_array,
                "ecoval_value": pa.array(self.values, pa.float64()),
                "ecoval_intrinsic": pa.array(self.intrinsic, pa.float64()),
                "ecoval_extrinsic": pa.array(self.extrinsic, pa.float64()),
                "ecoval_cluster": pa.array(self.clusters, pa.int32()),
                "ecoval_cluster_value": pa.array(self.cluster_values, pa.float64()),
                "ecoval_suspect": pa.array(self.suspect, pa.bool_()),
                "ecoval_mode": pa.array([self.mode] * len(self), pa.string()),
            }
        )
