"""A run's or a table's value columns summarised in three passes: no row reaches the driver.

The review, the night's figures, the quarantine preview and ``ecoval report`` read a
:class:`ValueSummary`, never the rows. :func:`summarise` runs three
:class:`~ecoval_ops.lakehouse.batches.BatchPass` es through whichever runner the engine gives it:

1. :class:`StatsPass`: per run, cluster, mode and new-row flag, the rows, value sums, suspects,
   percentiles, ``phi_c`` and the range of the values;
2. :class:`HistogramPass`: per mode, rows and the expected wrong labels
   (:func:`~ecoval_ops.valuation.quarantine.wrong_label_chance`) in :data:`BINS` equal bins
   over that range;
3. :class:`TopRowsPass`: the highest- and lowest-valued rows.

Quantiles and the lowest-valued cuts come from the histogram: exact up to the one bin (1/8192
of the range) holding the boundary, whose rows are counted in proportion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.lakehouse.batches import BatchPass
from ecoval_ops.lakehouse.columns import NEW_COL
from ecoval_ops.valuation.quarantine import wrong_label_chance

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from ecoval_ops.valuation.quarantine import Cut
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = ["BINS", "HistogramPass", "StatsPass", "TopRowsPass", "ValueSummary", "summarise"]

BINS = 8192
"""Equal bins over the values' range of the histogram that quantiles and cuts are read from."""

_GROUP = ["ecoval_run_id", "ecoval_cluster", "ecoval_mode", NEW_COL]
_SUMS = ["rows", "value_sum", "suspects", "percentile_sum", "suspect_chance"]
_TOP = ["ecoval_value", "ecoval_percentile", "ecoval_cluster", "ecoval_suspect", "ecoval_mode"]


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> NDArray[Any]:
    return np.asarray(batch.column(name).to_numpy(zero_copy_only=False))


def _grouped(table: pa.Table, keys: list[str], sums: list[str], extra: list[tuple[str, str]]) -> pa.Table:
    """``table`` grouped by ``keys``: ``sums`` summed, ``extra`` (column, aggregate) kept by name."""
    grouped = table.group_by(keys).aggregate([(c, "sum") for c in sums] + extra)
    names = [c.removesuffix("_sum").removesuffix("_min").removesuffix("_max") for c in grouped.column_names]
    return grouped.rename_columns(names).select(keys + sums + [c for c, _ in extra])


@dataclass(frozen=True)
class StatsPass:
    """Per run, cluster, mode and new-row flag: rows, sums of value, suspects, percentile and wrong-label chance.

    ``new`` reads :data:`~ecoval_ops.lakehouse.columns.NEW_COL` (a run's workspace values);
    without it every row counts as not new (a table's value columns).
    """

    new: bool

    @property
    def columns(self) -> tuple[str, ...]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        wanted = [*_TOP, "ecoval_run_id", "ecoval_cluster_value", "ecoval_intrinsic"]
        return tuple(dict.fromkeys(wanted + ([NEW_COL] if self.new else [])))

    def partial_schema(self) -> pa.Schema:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        types = [pa.string(), pa.int32(), pa.string(), pa.bool_(), pa.int64(), pa.float64(), pa.int64()]
        types += [pa.float64()] * 5
        names = [*_GROUP, *_SUMS, "phi", "value_min", "value_max"]
        return pa.schema([pa.field(n, t) for n, t in zip(names, types, strict=True)])

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        value, suspect = _column(batch, "ecoval_value").astype(float), _column(batch, "ecoval_suspect").astype(bool)
        chance = wrong_label_chance(_column(batch, "ecoval_intrinsic").astype(float))
        new = _column(batch, NEW_COL).astype(bool) if self.new else np.zeros(batch.num_rows, bool)
        table = pa.table(
            {
                "ecoval_run_id": batch.column("ecoval_run_id").cast(pa.string()),
                "ecoval_cluster": batch.column("ecoval_cluster").cast(pa.int32()),
                "ecoval_mode": batch.column("ecoval_mode").cast(pa.string()),
                NEW_COL: new,
                "rows": np.ones(batch.num_rows, np.int64),
                "value_sum": value,
                "suspects": suspect.astype(np.int64),
                "percentile_sum": _column(batch, "ecoval_percentile").astype(float),
                "suspect_chance": np.where(suspect, chance, 0.0),
                "phi": _column(batch, "ecoval_cluster_value").astype(float),
                "value_min": value,
                "value_max": value,
            }
        )
        return self.merge(table)

    def merge(self, partials: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        extremes = [("phi", "max"), ("value_min", "min"), ("value_max", "max")]
        return _grouped(partials, _GROUP, _SUMS, extremes)

    def finish(self, partial: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return partial


@dataclass(frozen=True)
class HistogramPass:
    """Per mode, the rows and the sum of their wrong-label chances in each of ``bins`` bins of ``[lo, hi]``.

    A partial holds one row per mode, the bins as two dense lists.
    """

    lo: float
    hi: float
    bins: int = BINS

    @property
    def columns(self) -> tuple[str, ...]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return ("ecoval_value", "ecoval_mode", "ecoval_intrinsic")

    def partial_schema(self) -> pa.Schema:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        return pa.schema(
            [("ecoval_mode", pa.string()), ("rows", pa.list_(pa.int64())), ("chance", pa.list_(pa.float64()))]
        )

    def bin_of(self, values: NDArray[np.float64]) -> NDArray[np.int64]:
        """The bin of each value (the last bin is closed)."""
        width = (self.hi - self.lo) / self.bins if self.hi > self.lo else 1.0
        return np.clip(((values - self.lo) / width).astype(np.int64), 0, self.bins - 1)

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        bins = self.bin_of(_column(batch, "ecoval_value").astype(float))
        chance = wrong_label_chance(_column(batch, "ecoval_intrinsic").astype(float))
        modes = _column(batch, "ecoval_mode").astype(str)
        return self._partial(
            {
                mode: (
                    np.bincount(bins[modes == mode], minlength=self.bins),
                    np.bincount(bins[modes == mode], weights=chance[modes == mode], minlength=self.bins),
                )
                for mode in np.unique(modes)
            }
        )

    def merge(self, partials: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return self._partial(self.finish(partials))

    def finish(self, partial: pa.Table) -> dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]]:
        """Per mode, the rows and the chance sums of every bin."""
        found: dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
        for mode, rows, chance in zip(*(partial.column(c).to_pylist() for c in partial.column_names), strict=True):
            before = found.get(mode, (np.zeros(self.bins, np.int64), np.zeros(self.bins)))
            found[mode] = (before[0] + np.asarray(rows, np.int64), before[1] + np.asarray(chance, np.float64))
        return found

    def _partial(self, bins: dict[str, tuple[NDArray[Any], NDArray[Any]]]) -> pa.Table:
        import pyarrow as pa

        modes = sorted(bins)
        return pa.table(
            {
                "ecoval_mode": pa.array(modes, pa.string()),
                "rows": pa.array([bins[m][0].astype(np.int64) for m in modes], pa.list_(pa.int64())),
                "chance": pa.array([bins[m][1].astype(np.float64) for m in modes], pa.list_(pa.float64())),
            }
        )


@dataclass(frozen=True)
class TopRowsPass:
    """The ``n`` highest- and ``n`` lowest-valued rows (ties by key)."""

    key: str
    key_type: pa.DataType
    n: int

    @property
    def columns(self) -> tuple[str, ...]:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        return (self.key, *_TOP)

    def partial_schema(self) -> pa.Schema:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        types = [self.key_type, pa.float64(), pa.float64(), pa.int32(), pa.bool_(), pa.string()]
        return pa.schema([pa.field(n, t) for n, t in zip(self.columns, types, strict=True)])

    def map(self, batch: pa.RecordBatch) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        return self.merge(pa.Table.from_batches([batch]).select(list(self.columns)).cast(self.partial_schema()))

    def merge(self, partials: pa.Table) -> pa.Table:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pyarrow as pa

        # A row may be among both ends of a small batch; keep it once.
        rows = partials.group_by(list(self.columns)).aggregate([])
        top = rows.sort_by([("ecoval_value", "descending"), (self.key, "ascending")]).slice(0, self.n)
        bottom = rows.sort_by([("ecoval_value", "ascending"), (self.key, "ascending")]).slice(0, self.n)
        return pa.concat_tables([top, bottom]).group_by(list(self.columns)).aggregate([]).select(list(self.columns))

    def finish(self, partial: pa.Table) -> pd.DataFrame:
        """See :class:`~ecoval_ops.lakehouse.batches.BatchPass`."""
        import pandas as pd

        order = ["ecoval_value", self.key]
        ranked = partial.to_pandas()
        top = ranked.sort_values(order, ascending=[False, True], kind="stable").head(self.n).assign(end="top")
        bottom = ranked.sort_values(order, kind="stable").head(self.n).assign(end="bottom")
        return pd.concat([top, bottom], ignore_index=True)[[self.key, *_TOP, "end"]]


@dataclass(frozen=True)
class ValueSummary:
    """What a review, a night and a report need of many valued rows.

    Attributes:
        groups: :class:`StatsPass`'s table: per run, cluster, mode and new-row flag.
        histogram: :class:`HistogramPass`'s result: per mode, rows and wrong-label chances per bin.
        edges: the histogram's ``BINS + 1`` bin edges.
        top_bottom: :class:`TopRowsPass`'s rows, highest first, then lowest first (``end``).
    """

    groups: pd.DataFrame
    histogram: dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]]
    edges: NDArray[np.float64]
    top_bottom: pd.DataFrame

    @property
    def rows(self) -> int:
        """Rows summarised."""
        return int(self.groups["rows"].sum())

    @property
    def by_mode(self) -> dict[str, int]:
        """Rows valued in and out of sample."""
        return {str(k): int(v) for k, v in self.groups.groupby("ecoval_mode")["rows"].sum().sort_index().items()}

    @property
    def suspects(self) -> int:
        """Rows flagged ``ecoval_suspect``."""
        return int(self.groups["suspects"].sum())

    @property
    def runs(self) -> list[str]:
        """The runs whose values the rows carry."""
        return sorted(self.groups["ecoval_run_id"].dropna().unique().tolist())

    def clusters(self) -> pd.DataFrame:
        """Per cluster: rows, rows by mode, cluster value phi_c, mean row value, suspect share; highest phi_c first."""
        grouped = self.groups.groupby("ecoval_cluster")
        table = grouped.agg(rows=("rows", "sum"), phi=("phi", "max"), value_sum=("value_sum", "sum"))
        table["mean_value"] = table.pop("value_sum") / table["rows"]
        table["suspect_share"] = grouped["suspects"].sum() / table["rows"]
        by_mode = self.groups.pivot_table(index="ecoval_cluster", columns="ecoval_mode", values="rows", aggfunc="sum")
        table = table.join(by_mode.fillna(0).astype(int).add_prefix("rows_"))
        return table.sort_values("phi", ascending=False).rename_axis("cluster").reset_index()

    def new_rows(self) -> pd.DataFrame:
        """Per cluster, the new rows' rows, suspects and percentile sum (the night's figures)."""
        new = self.groups[self.groups[NEW_COL].astype(bool)]
        return new.groupby("ecoval_cluster")[["rows", "suspects", "percentile_sum"]].sum()

    def mode_counts(self) -> dict[str, NDArray[np.int64]]:
        """Per mode, the rows in each of the histogram's bins."""
        return {mode: rows for mode, (rows, _) in self.histogram.items()}

    def coarse_histogram(
        self, bins: int = 49, low: float = 0.005, high: float = 0.995
    ) -> tuple[NDArray[np.float64], dict[str, NDArray[np.int64]]]:
        """``bins`` equal bins between the ``low`` and ``high`` quantiles, and each mode's rows in them (the plot).

        A fine bin counts in the coarse bin holding its centre; rows beyond the quantiles are not drawn.
        """
        edges = np.linspace(self.quantile(low), self.quantile(high), bins + 1)
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        inside = (centres >= edges[0]) & (centres <= edges[-1])
        coarse = np.clip(np.searchsorted(edges, centres, side="right") - 1, 0, bins - 1)
        counts = {}
        for mode, fine in self.mode_counts().items():
            counts[mode] = np.bincount(coarse[inside], weights=fine[inside], minlength=bins).astype(np.int64)
        return edges, counts

    def quantile(self, q: float) -> float:
        """The value at quantile ``q``, within the bin holding that rank (the range's ends are exact)."""
        counts = np.sum(list(self.mode_counts().values()), axis=0)
        cumulative = np.cumsum(counts)
        rank = q * cumulative[-1]
        b = min(int(np.searchsorted(cumulative, rank, side="left")), counts.size - 1)
        below = cumulative[b] - counts[b]
        share = (rank - below) / counts[b] if counts[b] else 0.0
        return float(self.edges[b] + share * (self.edges[b + 1] - self.edges[b]))

    def lowest(self, k: int) -> float:
        """The expected wrong labels among the ``k`` lowest-valued rows (the boundary bin in proportion)."""
        rows = np.sum([r for r, _ in self.histogram.values()], axis=0).astype(np.float64)
        chance = np.sum([c for _, c in self.histogram.values()], axis=0)
        taken = np.clip(k - np.concatenate([[0], np.cumsum(rows)[:-1]]), 0, rows)
        return float(np.sum(np.divide(chance * taken, rows, out=np.zeros_like(chance), where=rows > 0)))

    def preview(self, curve: RemovalCurve | None) -> list[Cut]:
        """The quarantine preview of the rows (:func:`~ecoval_ops.valuation.quarantine.cuts`)."""
        from ecoval_ops.valuation.quarantine import cuts

        return cuts(self.rows, self.lowest, self.suspects, float(self.groups["suspect_chance"].sum()), curve)


def summarise(run: Callable[[BatchPass[Any]], Any], *, top: TopRowsPass | None, new: bool) -> ValueSummary | None:
    """Summarise valued rows with ``run`` (an engine's runner of a pass over them); None when there are none.

    Args:
        run: runs a pass over the rows (``run_local`` over batches, ``run_spark`` over a frame).
        top: the pass of :attr:`ValueSummary.top_bottom`; None lists no row.
        new: whether the rows carry :data:`~ecoval_ops.lakehouse.columns.NEW_COL`.
    """
    import pandas as pd

    groups = run(StatsPass(new)).to_pandas()
    if groups.empty or not groups["rows"].sum():
        return None
    step = HistogramPass(float(groups["value_min"].min()), float(groups["value_max"].max()))
    return ValueSummary(
        groups=groups,
        histogram=run(step),
        edges=np.linspace(step.lo, step.hi, step.bins + 1),
        top_bottom=pd.DataFrame() if top is None else run(top),
    )
