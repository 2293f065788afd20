"""``ecoval report``: what the value columns of a Delta table say, in the terminal or as HTML.

Reads the table's value columns only (never its features), with delta-rs, so no JVM starts, and
streams them through the passes of :mod:`ecoval_ops.lakehouse.summary` (memory stays bounded).
When the MLflow store of the run is reachable, the standalone HTML also embeds the plots the run
logged (cluster map, removal curve), and the quarantine preview (``--preview``) takes its
validation accuracies from the removal curve of the latest refit whose values the table holds.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse.columns import SUGGESTION_COLUMNS, VALUE_COLUMNS
from ecoval_ops.lakehouse.queries import ready_queries
from ecoval_ops.lakehouse.summary import ValueSummary, summarise
from ecoval_ops.lakehouse.tables import open_table
from ecoval_ops.reporting.pages import html_page, preview_frame
from ecoval_ops.reporting.plots import figure_png, preview_plot, value_histogram
from ecoval_ops.storage import TableRef

if TYPE_CHECKING:
    import pandas as pd

    from ecoval_ops.reporting.night import PastRun
    from ecoval_ops.valuation.quarantine import Cut

__all__ = [
    "QUANTILES",
    "TableReport",
    "html_report",
    "preview_lines",
    "table_report",
    "text_report",
    "trend_lines",
]

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
CLUSTERS_SHOWN = 3


@dataclass(frozen=True)
class TableReport:
    """The figures of one report.

    Attributes:
        table: the table's path.
        version: the Delta version read.
        rows: rows in the table.
        not_valued: rows no run has valued yet.
        run_id: the run the report is restricted to, or None for every valued row.
        summary: the value columns of the rows reported on, summarised.
        quantiles: ``ecoval_value`` at :data:`QUANTILES` (from the summary's histogram).
        clusters: the per-cluster table, highest ``phi_c`` first.
        queries: ready-to-run filter queries.
    """

    table: TableRef
    version: int
    rows: int
    not_valued: int
    run_id: str | None
    summary: ValueSummary
    quantiles: dict[float, float]
    clusters: pd.DataFrame
    queries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The summary's figures, JSON-ready (``ecoval report --json``)."""
        return {
            "table": str(self.table),
            "version": self.version,
            "run_id": self.run_id,
            "rows": self.rows,
            "not_valued": self.not_valued,
            "by_mode": self.summary.by_mode,
            "suspects": self.summary.suspects,
            "quantiles": {str(q): v for q, v in self.quantiles.items()},
        }


def table_report(path: str | Path, *, run_id: str | None = None) -> TableReport:
    """Summarise the value columns of the Delta table at ``path``, streaming its batches.

    Raises:
        InvalidInputError: not a Delta table, no value columns, no valued rows, or no row valued
            by ``run_id``.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    from ecoval_ops.lakehouse.batches import BATCH_ROWS, BatchPass, run_local

    table = open_table(path)
    names = set(table.schema().to_arrow().names)
    missing = [c for c in VALUE_COLUMNS if c not in names and c not in SUGGESTION_COLUMNS]
    if missing:
        raise InvalidInputError(f"{path} has no value columns {missing}: run `ecoval run --table {path}` first")
    scan = table.to_pyarrow_dataset()
    valued = ds.field("ecoval_value").is_valid()
    chosen = valued if run_id is None else valued & (ds.field("ecoval_run_id").cast(pa.string()) == run_id)

    def over_batches(step: BatchPass[Any]) -> Any:
        return run_local(step, scan.to_batches(columns=list(step.columns), filter=chosen, batch_size=BATCH_ROWS))

    summary = summarise(over_batches, top=None, new=False)
    if summary is None and run_id is not None:
        raise InvalidInputError(f"no row of {path} was valued by run {run_id!r}")
    if summary is None:
        raise InvalidInputError(f"no row of {path} has been valued yet: run `ecoval run --table {path}` first")
    rows = scan.count_rows()
    return TableReport(
        table=TableRef.of(path),
        version=int(table.version()),
        rows=rows,
        not_valued=rows - scan.count_rows(filter=valued),
        run_id=run_id,
        summary=summary,
        quantiles={q: summary.quantile(q) for q in QUANTILES},
        clusters=summary.clusters(),
        queries=ready_queries(path, run_id=run_id),
    )


def text_report(r: TableReport) -> list[str]:
    """The terminal summary, line by line (plain text; the CLI adds no markup)."""
    valued, suspects = r.summary.rows, r.summary.suspects
    modes = ", ".join(f"{n} {mode.replace('_', ' ')}" for mode, n in r.summary.by_mode.items())
    scope = f"run {r.run_id}" if r.run_id else f"{len(r.summary.runs)} run(s), latest values per row"
    lines = [
        f"ecoval report: {r.table} (Delta v{r.version}; {scope})",
        f"  rows: {r.rows} in the table, {valued} valued ({modes}), {r.not_valued} not valued yet",
        "  value quantiles: " + ", ".join(f"{int(q * 100)}% {v:.4g}" for q, v in r.quantiles.items()),
        f"  suspects: {suspects} rows ({suspects / valued:.1%}) have labels that disagree with their most similar rows",
    ]
    best, worst = r.clusters.head(CLUSTERS_SHOWN), r.clusters.tail(CLUSTERS_SHOWN).iloc[::-1]
    for title, part in (("best clusters", best), ("worst clusters", worst)):
        lines.append(f"  {title} (phi_c, rows, mean row value, suspect share):")
        lines += [
            f"    cluster {int(c.cluster)}: phi {c.phi:.4g}, {int(c.rows)} rows, mean {c.mean_value:.4g}, "
            f"{c.suspect_share:.1%} suspect"
            for c in part.itertuples()
        ]
    lines.append("  filter queries (Spark SQL):")
    for name, sql in r.queries.items():
        lines += [f"    -- {name}", f"    {sql}"]
    return lines


def preview_lines(cuts: list[Cut]) -> list[str]:
    """The quarantine preview, one line per cut."""
    return ["  quarantine preview (expected wrong labels from each row's label vote):"] + [
        f"    {c.line()}" for c in cuts
    ]


def html_report(r: TableReport, extra_plots: dict[str, bytes] | None = None, preview: list[Cut] | None = None) -> str:
    """A standalone HTML page: the summary, the cluster table, the quarantine preview, the queries and the plots."""
    summary = "<pre>" + html.escape("\n".join(text_report(r)[:4])) + "</pre>"
    queries = "".join(f"<h3>{html.escape(n)}</h3><pre>{html.escape(q)}</pre>" for n, q in r.queries.items())
    plots = {
        "the table's values by mode": figure_png(value_histogram(*r.summary.coarse_histogram())),
        **({"quarantine preview": figure_png(preview_plot(preview))} if preview else {}),
        **{f"run review: {name}": png for name, png in (extra_plots or {}).items()},
    }
    sections = [
        ("Summary", summary),
        ("Clusters", r.clusters.to_html(index=False, float_format=lambda x: f"{x:.4g}")),
    ]
    if preview:
        table = preview_frame(preview).to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="n/a")
        sections.append(("Quarantine preview", table))
    return html_page(f"EcoVal report: {r.table.name}", [*sections, ("Filter queries", queries)], plots)


def trend_lines(history: list[PastRun]) -> list[str]:
    """The table's last runs, oldest first: mode, new rows, their suspect share and drift, alerts."""
    from datetime import UTC, datetime

    if not history:
        return ["  no run with night figures in this MLflow experiment"]
    lines = [f"  last {len(history)} runs (new rows each night):"]
    for run in history:
        m = run.metrics
        when = datetime.fromtimestamp(run.started_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"    {when}  {run.mode:<11} {int(m.get('night_rows', 0)):>8} rows  "
            f"suspect {m.get('night_suspect_share', 0.0):6.1%}  drift {m.get('night_cluster_drift', 0.0):.2f}"
            + (f"  ALERT: {run.alert}" if run.alert else "")
        )
    return lines
