"""What a reviewer sees of a valuation run: plots, tables and diagnostics.

The same figures go to the MLflow parent run (``review/`` artifacts) and into the standalone
HTML of ``ecoval report``. Everything here takes plain arrays and tables, so it is the same
whichever engine valued the rows. Row features never appear: rows are named by their key.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ecoval_ops.tracking.runs import PastRun
    from ecoval_ops.valuation import EcoVal
    from ecoval_ops.valuation.quarantine import Cut
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = [
    "MAP_POINTS",
    "TOP_ROWS",
    "Diagnostics",
    "cluster_map",
    "figure_png",
    "html_page",
    "new_figure",
    "removal_plot",
    "top_bottom_rows",
    "trend_plot",
    "value_histogram",
    "write_review",
]

MAP_POINTS = 5000
"""Most rows drawn on the cluster map (a seeded sample beyond that)."""
TOP_ROWS = 20
"""Rows listed at each end of the value ranking."""


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


def top_bottom_rows(rows: pd.DataFrame, key: str, source: pd.DataFrame | None = None) -> pd.DataFrame:
    """The highest- and lowest-valued rows, by key, with the source columns a run setting asked for.

    Args:
        rows: the top and bottom rows (``end`` says which), as the engine's summary found them.
        key: the key column.
        source: ``key`` and the source columns to show beside them (``review_columns``); None
            shows no feature.
    """
    return rows if source is None else rows.merge(source, on=key, how="left")


@dataclass(frozen=True)
class Diagnostics:
    """The production function's fitted constants, for the diagnostics panel.

    Attributes:
        gamma_alpha: ``Gamma_alpha``.
        gamma_beta: ``Gamma_beta*``.
        gamma: returns to scale ``gamma``.
        gammas_clipped: a Gamma was clipped (efficiency then holds only roughly).
        shrinkage: empirical-Bayes weights ``lambda_c``, one per cluster.
        kappa: ``c_kappa |mu|``.
        utility_full: ``U(B)``.
        utility_empty: ``U(empty)``.
    """

    gamma_alpha: float
    gamma_beta: float
    gamma: float
    gammas_clipped: bool
    shrinkage: tuple[float, ...]
    kappa: float
    utility_full: float
    utility_empty: float

    @classmethod
    def of(cls, ev: EcoVal) -> Diagnostics:
        """The diagnostics of a fitted EcoVal."""
        game, figures = ev.model_.game, ev.model_.figures()
        return cls(
            gamma_alpha=float(game.gamma_alpha),
            gamma_beta=float(game.gamma_beta),
            gamma=float(game.returns_to_scale),
            gammas_clipped=bool(game.gammas_clipped),
            shrinkage=ev.model_.shrinkage(),
            kappa=figures["kappa"],
            utility_full=float(game.utility_full),
            utility_empty=float(game.utility_empty),
        )

    @property
    def warning(self) -> str | None:
        """The reviewer's warning, or None."""
        if not self.gammas_clipped:
            return None
        return (
            f"a Gamma was clipped (Gamma_alpha {self.gamma_alpha:.3g}, Gamma_beta* {self.gamma_beta:.3g}): the "
            "second-order model fits the diagonal poorly, so cluster values do not add up exactly to U(B) - U(empty)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the shrinkage summarised."""
        lam = np.asarray(self.shrinkage)
        return {
            "Gamma_alpha": self.gamma_alpha,
            "Gamma_beta*": self.gamma_beta,
            "gamma": self.gamma,
            "gammas_clipped": self.gammas_clipped,
            "shrinkage_lambda_min": float(lam.min()) if lam.size else None,
            "shrinkage_lambda_mean": float(lam.mean()) if lam.size else None,
            "shrinkage_lambda_max": float(lam.max()) if lam.size else None,
            "kappa": self.kappa,
            "U_B": self.utility_full,
            "U_empty": self.utility_empty,
            "warning": self.warning,
        }

    def to_html(self) -> str:
        """A small HTML panel; the warning, when any, first and in red."""
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.to_dict().items()
            if k != "warning"
        )
        warn = f'<p class="warning">Warning: {html.escape(self.warning)}</p>' if self.warning else ""
        return f"{warn}<table class=diagnostics>{rows}</table>"


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


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


def write_review(
    folder: Path,
    *,
    histogram: tuple[NDArray[np.float64], Mapping[str, NDArray[np.int64]]],
    clusters: pd.DataFrame,
    top_bottom: pd.DataFrame,
    key: str,
    members: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]] | None,
    curve: RemovalCurve | None,
    diagnostics: Diagnostics,
    seed: int = 0,
    source: pd.DataFrame | None = None,
    preview: list[Cut] | None = None,
) -> list[Path]:
    """Write every review artifact of one run into ``folder``.

    Args:
        folder: where the files go (created).
        histogram: bin edges and each mode's rows in them (:func:`value_histogram`).
        clusters: the per-cluster table (rows, rows by mode, phi, mean value, suspect share).
        top_bottom: the highest- and lowest-valued rows (:func:`top_bottom_rows`).
        key: the row-key column.
        members: the model's training rows: embeddings in the cluster space, values, suspects.
        curve: the point-removal curve on the validation split (a refit's), or None.
        diagnostics: the production function's constants.
        seed: seeds the cluster map's sample.
        source: source columns to show beside the top and bottom rows (see :func:`top_bottom_rows`).
        preview: the quarantine preview's cuts (a plot, CSV and HTML), or None.

    Returns:
        The files written: at least three PNGs, the per-cluster table (CSV and HTML), the top
        and bottom rows (CSV), the diagnostics (JSON and HTML).
    """
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"value_histogram.png": value_histogram(*histogram)}
    if members is not None:
        figures["cluster_map.png"] = cluster_map(*members, seed=seed)
    if curve is not None:
        figures["removal_curve.png"] = removal_plot(curve)
        (folder / "removal_curve.json").write_text(json.dumps(curve.to_dict(), indent=2))
    if preview:
        from ecoval_ops.tracking.preview import preview_frame, preview_plot

        figures["quarantine_preview.png"] = preview_plot(preview)
        table = preview_frame(preview)
        table.to_csv(folder / "quarantine_preview.csv", index=False)
        (folder / "quarantine_preview.html").write_text(table.to_html(index=False, float_format=lambda x: f"{x:.4g}"))
    figures["cluster_values.png"] = _cluster_bars(clusters)
    for name, fig in figures.items():
        (folder / name).write_bytes(figure_png(fig))
    clusters.to_csv(folder / "clusters.csv", index=False)
    (folder / "clusters.html").write_text(clusters.to_html(index=False, float_format=lambda x: f"{x:.4g}"))
    top_bottom_rows(top_bottom, key, source).to_csv(folder / "top_bottom_rows.csv", index=False)
    (folder / "diagnostics.json").write_text(json.dumps(diagnostics.to_dict(), indent=2))
    (folder / "diagnostics.html").write_text(diagnostics.to_html())
    return sorted(folder.iterdir())


def _cluster_bars(clusters: pd.DataFrame) -> Figure:
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


def html_page(title: str, sections: list[tuple[str, str]], images: dict[str, bytes]) -> str:
    """A standalone HTML page: text sections (already HTML) and PNGs embedded as data URIs."""
    body = "".join(f"<h2>{html.escape(head)}</h2>{content}" for head, content in sections)
    pictures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.warning{color:#b00}"
        "img{max-width:100%}pre{background:#f4f4f4;padding:8px;white-space:pre-wrap}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}<h2>Plots</h2>{pictures}"
        "</body></html>"
    )
