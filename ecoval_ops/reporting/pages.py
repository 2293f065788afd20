"""The review's files and pages: what a run logs under ``review/`` and the standalone HTML page.

Rows are named by their key; the source columns a run setting asks for (``review_columns``) are
the only features shown.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.reporting.plots import (
    cluster_bars,
    cluster_map,
    figure_png,
    preview_plot,
    removal_plot,
    value_histogram,
)

if TYPE_CHECKING:
    import pandas as pd

    from ecoval_ops.reporting.figures import Diagnostics
    from ecoval_ops.valuation.quarantine import Cut
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = ["REMOVAL_FILE", "TOP_ROWS", "html_page", "preview_frame", "saved_curve", "top_bottom_rows", "write_review"]

TOP_ROWS = 20
"""Rows listed at each end of the value ranking."""
REMOVAL_FILE = "removal_curve.json"
"""The refit's point-removal curve: saved beside the model in the run's workspace and under ``review/``."""


def saved_curve(path: Path) -> RemovalCurve | None:
    """The removal curve saved at ``path``; None when the run saved none."""
    from ecoval_ops.valuation.removal import RemovalCurve

    return RemovalCurve.from_dict(json.loads(path.read_text())) if path.exists() else None


def top_bottom_rows(rows: pd.DataFrame, key: str, source: pd.DataFrame | None = None) -> pd.DataFrame:
    """The highest- and lowest-valued rows, by key, with the source columns a run setting asked for.

    Args:
        rows: the top and bottom rows (``end`` says which), as the engine's summary found them.
        key: the key column.
        source: ``key`` and the source columns to show beside them (``review_columns``); None
            shows no feature.
    """
    return rows if source is None else rows.merge(source, on=key, how="left")


def preview_frame(cuts: list[Cut]) -> pd.DataFrame:
    """One row per cut: rows removed, expected wrong labels (and their share), validation accuracy."""
    import pandas as pd

    frame = pd.DataFrame([c.to_dict() for c in cuts])
    frame.insert(4, "expected_wrong_share", frame["expected_wrong_labels"] / frame["rows_removed"].clip(lower=1))
    return frame


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
        (folder / REMOVAL_FILE).write_text(json.dumps(curve.to_dict(), indent=2))
    if preview:
        figures["quarantine_preview.png"] = preview_plot(preview)
        table = preview_frame(preview)
        table.to_csv(folder / "quarantine_preview.csv", index=False)
        (folder / "quarantine_preview.html").write_text(table.to_html(index=False, float_format=lambda x: f"{x:.4g}"))
    figures["cluster_values.png"] = cluster_bars(clusters)
    for name, fig in figures.items():
        (folder / name).write_bytes(figure_png(fig))
    clusters.to_csv(folder / "clusters.csv", index=False)
    (folder / "clusters.html").write_text(clusters.to_html(index=False, float_format=lambda x: f"{x:.4g}"))
    top_bottom_rows(top_bottom, key, source).to_csv(folder / "top_bottom_rows.csv", index=False)
    (folder / "diagnostics.json").write_text(json.dumps(diagnostics.to_dict(), indent=2))
    (folder / "diagnostics.html").write_text(diagnostics.to_html())
    return sorted(folder.iterdir())


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
