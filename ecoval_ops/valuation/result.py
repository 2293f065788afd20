"""The one result type of a valuation (pyDVL's ``ValuationResult``, architecture.md columns)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["SUSPECT_ODDS", "TWO_CLASS_SUSPECT_ODDS", "Mode", "ValuationResult", "check_values"]

Mode = Literal["in_sample", "out_of_sample"]

SUSPECT_ODDS = 3.0
"""A row is suspect when the label its vote supports scores at least this many times its own (three
or more classes).

Chosen on seeds 0-4 of the quality protocols, confirmed on seeds 5-9 (``BENCHMARKS.md``): the
sign of ``alpha`` (odds 1) flagged about two rows for each mislabelled one; at 3 the flag is
precise where labels have many classes and still catches most flips."""

TWO_CLASS_SUSPECT_ODDS = 1.5
"""The odds on two classes: the supported label scores at least 1.5 times the row's own, an
agreement of at most 0.4.

With two classes every flip lands in the one other class, so a flipped row's neighbours carry its
wrong label more often than with many and its agreement sits nearer one half: at odds 3 the flag
missed half of P1's flips (precision / recall 0.99 / 0.50). 1.5 is the largest odds that finds
80% of them, chosen on seeds 0-4 (0.89 / 0.83) and confirmed on 5-9 (0.91 / 0.84). Retraining
without the suspects gives at least the accuracy odds 3 gives on every two-class set, with a
linear and with a boosted-trees model, at lower precision where the vote ranks flips less well
(``benchmarks/NOTES.md``, "The two-class suspect flag")."""


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
    """Per-row output of a valuation method (EcoVal or a baseline), aligned with its rows.

    ``np.asarray(result)`` is ``result.values``, so callers that treat a valuation as an array
    keep working. The EcoVal-only parts (alpha, beta, clusters) are None for the baselines.

    Attributes:
        values: ``(n,)`` row values ``v_i`` in utility units.
        intrinsic: ``(n,)`` ``alpha_i``, or None.
        extrinsic: ``(n,)`` ``beta_i``, or None.
        clusters: ``(n,)`` cluster ids, or None.
        cluster_values: ``(n,)`` ``phi_c`` of each row's cluster, or None.
        mode: ``"in_sample"`` or ``"out_of_sample"``. Default ``"in_sample"``.
        method: the method that produced the values. Default ``"ecoval"``.
        n_trainings: model trainings the method ran (None where not counted, as for values
            read back from a saved state).
        suggested_label: ``(n,)`` the label each row's vote supports (EcoVal), or None.
        label_confidence: ``(n,)`` that label's score in the vote, in [0, 1].
        n_classes: K, the labels' classes (EcoVal), which sets the suspect odds.
    """

    values: NDArray[np.float64]
    intrinsic: NDArray[np.float64] | None = None
    extrinsic: NDArray[np.float64] | None = None
    clusters: NDArray[np.int64] | None = None
    cluster_values: NDArray[np.float64] | None = None
    mode: Mode = "in_sample"
    method: str = "ecoval"
    n_trainings: int | None = None
    suggested_label: NDArray[np.generic] | None = None
    label_confidence: NDArray[np.float64] | None = None
    n_classes: int | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.values).shape[0]
        for name in ("values", "intrinsic", "extrinsic", "cluster_values", "label_confidence"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_values(getattr(self, name), n, name))
        if self.clusters is not None:
            clusters = np.asarray(self.clusters)
            if clusters.shape != (n,) or not np.issubdtype(clusters.dtype, np.integer):
                raise ValueError(f"clusters must be ({n},) integers; found {clusters.shape} {clusters.dtype}")
            object.__setattr__(self, "clusters", clusters.astype(np.int64))
        if self.suggested_label is not None and np.asarray(self.suggested_label).shape != (n,):
            raise ValueError(f"suggested_label must be ({n},); found {np.asarray(self.suggested_label).shape}")
        if self.mode not in ("in_sample", "out_of_sample"):
            raise ValueError(f"mode must be 'in_sample' or 'out_of_sample'; found {self.mode!r}")
        if self.n_trainings is not None and self.n_trainings < 0:
            raise ValueError(f"n_trainings must be >= 0; found {self.n_trainings}")
        if self.n_classes is not None and self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; found {self.n_classes}")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def x(self) -> NDArray[np.float64]:
        """Effective inputs ``x_i = alpha_i * beta_i`` (EcoVal)."""
        return np.asarray(self._ecoval("intrinsic") * self._ecoval("extrinsic"), dtype=np.float64)

    def take(self, rows: NDArray[np.intp] | NDArray[np.bool_]) -> ValuationResult:
        """The result of rows ``rows`` (indices or a mask) only."""
        picked: dict[str, Any] = {
            f.name: getattr(self, f.name)[rows] for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)
        }
        return replace(self, **picked)

    @property
    def suspect(self) -> NDArray[np.bool_]:
        """The vote supports another label at least the odds times the row's own.

        ``score_support >= odds * agree_i`` with ``agree_i = (1 + alpha_i) / 2``, the odds
        :data:`TWO_CLASS_SUSPECT_ODDS` on two classes and :data:`SUSPECT_ODDS` on more.
        """
        odds = TWO_CLASS_SUSPECT_ODDS if self._ecoval("n_classes") == 2 else SUSPECT_ODDS
        agree = (1.0 + self._ecoval("intrinsic")) / 2.0
        return np.asarray(self._ecoval("label_confidence") >= odds * agree)

    def _ecoval(self, name: str) -> NDArray[Any]:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"a {self.method} result has no {name}: only EcoVal's results carry it")
        return np.asarray(value)

    def to_arrow(self, keys: ArrayLike, key_name: str) -> pa.Table:
        """The row-level value columns of architecture.md, keyed by ``keys``.

        Table-level columns (percentile, run id, model version, timestamp) are added by the
        writer, which sees all valued rows. ``ecoval_suggested_label`` (the labels' type) and
        ``ecoval_label_confidence`` are NULL unless the row is suspect; a result without them
        (a state saved before they existed) leaves them out.
        """
        import pyarrow as pa

        key_array = pa.array(np.asarray(keys))
        if len(key_array) != len(self):
            raise ValueError(f"{len(key_array)} keys for {len(self)} valued rows")
        columns = {
            key_name: key_array,
            "ecoval_value": pa.array(self.values, pa.float64()),
            "ecoval_intrinsic": pa.array(self._ecoval("intrinsic"), pa.float64()),
            "ecoval_extrinsic": pa.array(self._ecoval("extrinsic"), pa.float64()),
            "ecoval_cluster": pa.array(self._ecoval("clusters"), pa.int32()),
            "ecoval_cluster_value": pa.array(self._ecoval("cluster_values"), pa.float64()),
            "ecoval_suspect": pa.array(self.suspect, pa.bool_()),
            "ecoval_mode": pa.array([self.mode] * len(self), pa.string()),
        }
        if self.suggested_label is not None and self.label_confidence is not None:
            fixable = ~self.suspect
            columns["ecoval_suggested_label"] = pa.array(np.asarray(self.suggested_label), mask=fixable)
            columns["ecoval_label_confidence"] = pa.array(self.label_confidence, pa.float64(), mask=fixable)
        return pa.table(columns)
