"""The ``ecoval`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from ecoval_ops.storage import TableRef

__all__ = ["entry", "main"]


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ecoval_ops.demo import FILTER_SQL, run_demo

    console = Console(soft_wrap=True)
    with console.status(f"building a Delta table of noisy digits and running two nights ({args.engine} engine)..."):
        r = run_demo(args.workdir, engine=args.engine, seed=args.seed)
    first, second = r.nights
    console.print(f"[bold]EcoVal lakehouse demo[/bold]: {r.table}")
    console.print(
        f"  night 1 ({first.mode}): {first.rows_valued} rows valued ({first.rows_in_sample} in sample, "
        f"{first.rows_out_of_sample} held out for validation and valued out of sample) with {first.n_trainings} "
        f"trainings; model version {first.model_version}"
    )
    console.print(
        f"  night 2 ({second.mode}): {second.rows_valued} new rows valued out of sample, no retraining "
        f"(Delta v{second.table_version_read} -> v{second.table_version_written})"
    )
    console.print(
        f"  {r.n_flipped} of {r.n_rows} labels were flipped on purpose: AUROC of the value ranking {r.auroc:.3f} "
        f"(new rows alone {r.auroc_new:.3f}); ecoval_suspect flags them with precision {r.suspect_precision:.2f}, "
        f"recall {r.suspect_recall:.2f}"
    )
    console.print(
        f"  ecoval_suggested_label restores the original label of {r.restored} of the {r.flagged_flips} flagged "
        f"flips ({r.restored / max(r.flagged_flips, 1):.0%})"
    )
    q = r.quarantine
    console.print(
        f"  quarantine preview: the lowest 5% of night 1 ({q['rows_removed']} rows) hold about "
        f"{q['expected_wrong_labels']:.0f} wrong labels by their votes ({r.quarantine_flipped} were flipped); "
        f"validation accuracy without them {q['validation_accuracy']:.3f} (ecoval report --preview)"
    )
    console.print("  keep the helpful, label-consistent rows with Spark SQL:")
    console.print(f"    {FILTER_SQL.format(table=r.table)}", markup=False)
    console.print(f"    -> {r.clean_rows} rows")
    store = r.tracking_uri
    console.print("  review the runs in the MLflow UI:")
    console.print(f"    mlflow ui --backend-store-uri {store} --port 5000", markup=False)
    console.print(f"    http://127.0.0.1:5000/#/experiments/{r.experiment_id}/runs/{first.run_id}", markup=False)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ecoval_ops.config import load_config
    from ecoval_ops.pipeline import run_valuation
    from ecoval_ops.progress import Progress
    from ecoval_ops.reporting.figures import summary_line

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "config")}
    # An unset switch must not override the YAML file's value.
    flags["quiet"] = flags["quiet"] or None
    flags["json_output"] = flags["json_output"] or None
    cfg = load_config(args.config, **flags)
    # Bars only at a terminal: piped or logged stderr (Airflow, CI, scripts) keeps one line per message.
    with Progress(enabled=not cfg.quiet and sys.stderr.isatty()) as progress:
        summary = run_valuation(cfg, progress=progress)
    if summary.alert and not cfg.quiet:
        print(f"ecoval: warning: alert on {cfg.source.table}: {summary.alert}", file=sys.stderr)
    if cfg.json_output:
        print(json.dumps(asdict(summary), sort_keys=True))
    elif not cfg.quiet:
        from rich.console import Console

        console = Console(soft_wrap=True)
        if summary.mode == "noop":
            console.print(
                f"no new rows in {cfg.source.table}@v{summary.table_version_read}: nothing to value, nothing written"
            )
            return 0
        console.print(summary_line(summary.mode, asdict(summary)), highlight=False)
        console.print(
            f"  {cfg.source.table} v{summary.table_version_read} -> v{summary.table_version_written}; "
            f"MLflow run {summary.run_id}; model {cfg.registered_model_name} v{summary.model_version} (alias current)"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from ecoval_ops.config import default_tracking_uri, tracking_store_exists
    from ecoval_ops.reporting.table import html_report, preview_lines, table_report, text_report, trend_lines
    from ecoval_ops.tracking import ValuationTracker

    # The report downloads a few small artifacts; MLflow's bars would clutter stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    r = table_report(args.table, run_id=args.run_id)
    uri = args.mlflow_uri or default_tracking_uri()
    store = tracking_store_exists(uri)
    tracker = ValuationTracker(uri, args.experiment)
    preview = r.summary.preview(tracker.removal_curve(r.summary.runs) if store else None) if args.preview else None
    if args.json:
        summary = r.to_dict()
        if preview is not None:
            summary["preview"] = [c.to_dict() for c in preview]
        print(json.dumps(summary))
        return 0
    for line in text_report(r) + (preview_lines(preview) if preview else []):
        print(line)
    if store:
        for line in trend_lines(tracker.history(str(TableRef.of(args.table)))):
            print(line)
    if args.html:
        run = args.run_id or _latest_run(args.table)
        plots = tracker.review_plots(run) if run else {}
        out = Path(args.html)
        out.write_text(html_report(r, plots, preview))
        print(f"  HTML report: {out.resolve()} ({len(plots) + 1 + bool(preview)} plots)")
    return 0


def _latest_run(table: str) -> str | None:
    from ecoval_ops.lakehouse import read_watermark

    mark = read_watermark(table)
    return mark.run_id if mark else None


def _explain(args: argparse.Namespace) -> int:
    from ecoval_ops.config import default_tracking_uri
    from ecoval_ops.explain import explain_row, text_explanation

    found = explain_row(args.table, args.key, tracking_uri=args.mlflow_uri or default_tracking_uri())
    if args.json_output:
        print(json.dumps(found.to_dict(), sort_keys=True, default=str))
    else:
        print("\n".join(text_explanation(found)))
    return 0


def _sql(args: argparse.Namespace) -> int:
    from ecoval_ops.lakehouse.queries import create_views, ready_queries

    for name, query in ready_queries(args.table, values=args.values_table, key=args.key).items():
        print(f"-- {name}\n{query};\n")
    if args.create_views:
        from ecoval_ops.lakehouse.spark import spark_session

        tables = [TableRef.of(t) for t in (args.table, args.values_table) if t]
        name = args.name or re.sub(r"[^A-Za-z0-9_]", "_", tables[0].name)
        spark = spark_session(remote=args.spark_remote, tables=tables)
        views = create_views(spark, args.table, name, values=args.values_table, key=args.key)
        for view, count in views.items():
            print(f"-- view {view} created in the Spark catalog: {count} rows")
    return 0


def _spark_connect(args: argparse.Namespace) -> int:
    from ecoval_ops.lakehouse.spark import SparkSizing
    from ecoval_ops.lakehouse.spark_connect import serve

    sizing = SparkSizing(args.cores, args.driver_memory, args.executor_memory)
    return serve(master=args.master, host=args.host, port=args.port, sizing=sizing)


def _spark_connect_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ecoval_ops.identifiers import CONNECT_PORT

    server = commands.add_parser(
        "spark-connect",
        help="run a Spark Connect server with Delta in the foreground, for runs to attach to (--spark-remote)",
        description="Run a long-lived Spark Connect server with Delta's jars, the s3a connector and the Delta SQL "
        "extension; `ecoval run --engine spark --spark-remote sc://HOST:PORT` and the DAG (spark_conn_id) attach "
        "to it instead of starting an application per step. Stops on SIGTERM or Ctrl-C.",
    )
    server.add_argument("--master", help="Spark master URL (default $ECOVAL_SPARK_MASTER, else local[*])")
    server.add_argument("--host", help="address to listen on (default every interface)")
    server.add_argument("--port", type=int, default=CONNECT_PORT, help=f"port to listen on (default {CONNECT_PORT})")
    server.add_argument("--cores", type=int, help="spark.cores.max on a cluster, local[N] in local mode")
    server.add_argument("--driver-memory", help="spark.driver.memory (default 4g local, 1g on a cluster)")
    server.add_argument("--executor-memory", help="spark.executor.memory on a cluster")
    server.set_defaults(handler=_spark_connect)


def _run_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="value the rows of a Delta table and write the value columns back",
        description="Value the rows of a Delta table and write the value columns back with one MERGE. "
        "Every flag can also come from --config, keyed by its snake_case name (flags win).",
    )
    from ecoval_ops.config import settings

    sections: dict[str | None, argparse._ArgumentGroup] = {}
    for s in settings():
        section = sections.get(s.group) or sections.setdefault(
            s.group, run.add_argument_group(f"{s.group or 'run'} settings")
        )
        flags = [s.flag, *(f"--{a.replace('_', '-')}" for a in s.aliases)]
        if s.kind is bool:
            # A switch that is on by default can only be turned off: --no-<name>.
            action = argparse.BooleanOptionalAction if s.default else "store_true"
            section.add_argument(*flags, dest=s.name, action=action, default=None, help=s.help)
        else:
            section.add_argument(*flags, dest=s.name, type=s.kind, choices=s.choices, help=s.help)
    run.add_argument("--config", help="YAML file with any of these settings (snake_case keys)")
    run.set_defaults(handler=_run)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecoval", description="EcoVal data valuation for ML lakehouse pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    _run_parser(commands)
    _spark_connect_parser(commands)
    demo = commands.add_parser(
        "demo", help="build a Delta table of digits with 10%% flipped labels and run the nightly job twice"
    )
    demo.add_argument(
        "--workdir",
        default="ecoval-demo",
        help="folder of the table (replaced) and the MLflow store (kept: runs accumulate)",
    )
    demo.add_argument("--engine", choices=["spark", "delta-rs"], default="spark", help="engine (default spark)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the noise and of EcoVal (default 0)")
    demo.set_defaults(handler=_demo)
    report = commands.add_parser(
        "report", help="summarise the value columns of a Delta table (terminal, or standalone HTML)"
    )
    report.add_argument("--table", required=True, help="path or URI of a valued Delta table")
    report.add_argument("--run-id", help="only the rows this MLflow run valued")
    report.add_argument("--html", help="also write a standalone HTML report with the plots to this file")
    report.add_argument(
        "--mlflow-uri", help="MLflow store of the runs, for their plots and trend (default as ecoval run)"
    )
    report.add_argument("--experiment", default="ecoval", help="MLflow experiment of the runs (default ecoval)")
    report.add_argument(
        "--preview",
        action="store_true",
        help="quarantine preview: for the lowest 1-30%% and the suspects, rows removed, expected wrong labels "
        "and validation accuracy after removal",
    )
    report.add_argument(
        "--json", action="store_true", help="print the figures (and the preview's cuts) as one JSON object"
    )
    report.set_defaults(handler=_report)
    explain = commands.add_parser(
        "explain", help="why one row has its value: its cluster share, alpha, beta, kappa term and neighbours"
    )
    explain.add_argument("--table", required=True, help="path or URI of a valued Delta table")
    explain.add_argument("--key", required=True, help="the row's key (typed as the key column)")
    explain.add_argument("--mlflow-uri", help="MLflow store of the runs (default as ecoval run)")
    explain.add_argument("--json", dest="json_output", action="store_true", help="print the explanation as JSON")
    explain.set_defaults(handler=_explain)
    sql = commands.add_parser("sql", help="print ready-to-run filter queries over the value columns")
    sql.add_argument("--table", required=True, help="path or URI of a valued Delta table")
    sql.add_argument(
        "--create-views",
        action="store_true",
        help="also create the views <name>_ecoval_clean and <name>_ecoval_suspect in the Spark catalog",
    )
    sql.add_argument("--name", help="prefix of the view names (default: the table's folder name)")
    sql.add_argument("--values-table", help="the separate values table of `ecoval run --values-table`, joined on --key")
    sql.add_argument("--key", help="the key column joining --values-table")
    sql.add_argument("--spark-remote", help="create the views on this Spark Connect server (sc://host:port)")
    sql.set_defaults(handler=_sql)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ecoval`` command; returns the exit status (2 with one line on bad input)."""
    from ecoval_ops.exceptions import EcovalError

    args = _parser().parse_args(argv)
    # MLflow logs at INFO on stderr (for example when it creates a SQLite store) and sets its
    # logger's level from MLFLOW_LOGGING_LEVEL when imported; a run's output is its own summary,
    # and errors stay one line.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.handler(args))
        except EcovalError as e:
            print(f"ecoval: error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader left (`ecoval explain ... | head`): what is left to print goes nowhere,
            # and the exit status says so, as a shell tool's would (128 + SIGPIPE).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our warnings as one line (``ecoval: warning: ...``); others as Python prints them.

    Takes :func:`warnings.showwarning`'s arguments; :func:`warnings.formatwarning` takes them
    without ``file`` (passing it on broke on the first library warning shown).
    """
    from ecoval_ops.exceptions import EcovalWarning

    if issubclass(category, EcovalWarning):
        print(f"ecoval: warning: {message}", file=file or sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=file or sys.stderr)


def entry() -> None:
    """The console script: :func:`main`, then :func:`~ecoval_ops.process.exit_now`."""
    from ecoval_ops.process import exit_now

    exit_now(main())


if __name__ == "__main__":
    entry()
