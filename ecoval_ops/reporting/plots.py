"""The plots a reviewer sees of a valuation run, as matplotlib figures off any pyplot state.

The same figures go to the MLflow parent run (``review/`` artifacts, :mod:`.pages`) and into the
standalone HTML of ``ecoval report``. Everything here takes plain arrays and tables, so it is the
same whichever engine valued the rows. Row features never appear: rows are named by their key.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ecoval_ops.reporting.night import PastRun
    from ecoval_ops.valuation.quarantine import Cut
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = [
    "MAP_POINTS",
    "cluster_bars",
    "cluster_map",
    "figure_png",
    "new_figure",
    "preview_plot",
    "removal_plot",
    "trend_plot",
    "value_histogram",
]

MAP_POINTS = 5000
"""Most rows drawn on the cluster map (a seeded sample beyond that)."""


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Any]:
    """A figure of ``width`` x ``height`` inches with one axes, off any pyplot state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def value_histogram(edges: NDArray[np.float64], counts: Mapping[str, NDArray[np.int64]]) -> Figure:
    """Histogram of ``ecoval_value``: the rows of each ``ecoval_mode`` (in / out of sample) in the bins of ``edges``."""
    fig, ax = new_figure()
    for mode, rows in sorted(counts.items()):
        ax.stairs(rows, edges, fill=True, alpha=0.6, label=f"{mode} ({int(rows.sum())} rows)")
    ax.axvline(0.0, color="black", lw=0.8, ls=":")
    ax.set_xlabel("ecoval_value")
    ax.set_ylabel("rows")
    ax.set_title("Row values by mode")
    ax.legend()
    fig.tight_layout()
    return fig


def cluster_map(Z: NDArray[np.float64], values: NDArray[np.float64], suspect: NDArray[np.bool_], seed: int) -> Figure:
    """The rows on the first two principal components of their embeddings.

    Colour is the value's percentile among the drawn rows; suspects (``ecoval_suspect``) are marked.
    """
    total = Z.shape[0]
    rng = np.random.default_rng(seed)
    drawn = np.sort(rng.choice(Z.shape[0], size=MAP_POINTS, replace=False)) if Z.shape[0] > MAP_POINTS else None
    if drawn is not None:
        Z, values, suspect = Z[drawn], values[drawn], suspect[drawn]
    centred = Z - Z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.column_stack([centred[:, 0], np.zeros(len(Z))])
    rank = np.argsort(np.argsort(values, kind="stable"), kind="stable") / max(len(values) - 1, 1)
    fig, ax = new_figure(7.0, 5.5)
    points = ax.scatter(xy[:, 0], xy[:, 1], c=rank, cmap="viridis", s=8, alpha=0.8)
    ax.scatter(xy[suspect, 0], xy[suspect, 1], marker="x", color="red", s=18, lw=0.8, label="suspect")
    fig.colorbar(points, ax=ax, label="value percentile")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    shown = "" if drawn is None else f" ({MAP_POINTS} of {total} drawn)"
    ax.set_title(f"Training rows on the first two principal components{shown}")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def removal_plot(curve: RemovalCurve) -> Figure:
    """Validation accuracy after removing the highest- and the lowest-valued training rows."""
    fig, ax = new_figure()
    shares = [100 * s for s in curve.shares]
    ax.plot(shares, curve.top, marker="o", label="highest-valued removed")
    ax.plot(shares, curve.bottom, marker="o", label="lowest-valued removed")
    ax.axhline(curve.full, color="grey", ls=":", label="all rows")
    ax.set_xlabel("% of training rows removed")
    ax.set_ylabel("validation accuracy (retrained)")
    ax.set_title("Point removal: losing the highest-valued rows should hurt most")
    ax.legend()
    fig.tight_layout()
    return fig


def cluster_bars(clusters: pd.DataFrame) -> Figure:
    """Cluster values phi_c, bars coloured by the cluster's suspect share."""
    import matplotlib

    fig, ax = new_figure()
    colours = matplotlib.colormaps["Reds"](0.2 + 0.8 * clusters["suspect_share"].to_numpy())
    ax.bar(clusters["cluster"].astype(str), clusters["phi"], color=colours)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("cluster (darker: more suspects)")
    ax.set_ylabel("phi_c")
    ax.set_title("Cluster values")
    fig.tight_layout()
    return fig


def preview_plot(cuts: list[Cut]) -> Figure:
    """Bars: rows each cut removes and the wrong labels expected among them; line: validation accuracy."""
    fig, ax = new_figure()
    names = [c.cut for c in cuts]
    ax.bar(names, [c.rows_removed for c in cuts], color="#c8d6e5", label="rows removed")
    ax.bar(names, [c.expected_wrong_labels for c in cuts], color="#c0392b", label="expected wrong labels")
    ax.set_xlabel("cut (lowest-valued share, or the suspect flag)")
    ax.set_ylabel("rows")
    ax.legend(loc="upper left")
    accuracy = [(c.cut, c.validation_accuracy) for c in cuts if c.validation_accuracy is not None]
    if accuracy:
        right = ax.twinx()
        right.plot([n for n, _ in accuracy], [a for _, a in accuracy], color="black", marker="o")
        right.set_ylabel("validation accuracy after removal")
    ax.set_title("Quarantine preview: what each cut removes")
    fig.tight_layout()
    return fig


def trend_plot(nights: list[PastRun]) -> Figure:
    """The table's last runs: new rows' suspect share and cluster drift, alerts marked."""
    from datetime import UTC, datetime

    fig, ax = new_figure(8.0, 3.6)
    when = [datetime.fromtimestamp(n.started_ms / 1000, UTC) for n in nights]
    suspect = [n.metrics.get("night_suspect_share", np.nan) for n in nights]
    drift = [n.metrics.get("night_cluster_drift", np.nan) for n in nights]
    ax.plot(when, suspect, marker="o", label="suspect share of new rows")
    ax.plot(when, drift, marker="s", label="cluster drift (TV)")
    alerts = [i for i, n in enumerate(nights) if n.alert]
    if alerts:
        ax.scatter([when[i] for i in alerts], [suspect[i] for i in alerts], s=120, facecolors="none",
                   edgecolors="red", label="alert", zorder=3)  # fmt: skip
    ax.set_ylabel("share")
    ax.set_title(f"last {len(nights)} runs")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


def figure_png(fig: Figure) -> bytes:
    """The PNG bytes of a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
