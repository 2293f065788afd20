"""The ``ecoval`` command."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ecoval_ops.demo import run_digits_demo

    console = Console()
    with console.status("valuing scikit-learn digits with 10% injected label noise..."):
        s = run_digits_demo(seed=args.seed)
    console.print(f"[bold]EcoVal demo[/bold]: {s.n_train} digits, {s.n_noisy} labels flipped on purpose")
    console.print(
        f"  {s.n_trainings} model trainings for p = {s.n_clusters} clusters, fitted in {s.fit_seconds:.1f} s "
        "(Shapley-style methods need thousands)"
    )
    console.print(f"  noise detection AUROC of the value ranking: [bold]{s.auroc:.3f}[/bold]")
    console.print(f"  suspect flag (alpha < 0): precision {s.suspect_precision:.2f}, recall {s.suspect_recall:.2f}")
    console.print(f"  297 new rows valued out of sample, no retraining: AUROC {s.oos_auroc:.3f}")
    console.print(
        f"  Gamma_alpha {s.gamma_alpha:.3f}, Gamma_beta* {s.gamma_beta:.3f}, "
        f"returns to scale gamma {s.returns_to_scale:.3f}"
    )
    table = Table(title="cluster values phi_c (utility units: mean log-likelihood on validation)")
    table.add_column("cluster", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("phi_c", justify="right")
    table.add_column("phi_c per row", justify="right")
    for c in range(s.n_clusters):
        table.add_row(
            str(c),
            str(s.cluster_sizes[c]),
            f"{s.cluster_values[c]:+.4f}",
            f"{s.cluster_values[c] / s.cluster_sizes[c]:+.2e}",
        )
    console.print(table)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ecoval_ops.config import load_config
    from ecoval_ops.pipeline import run_valuation

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "config")}
    flags["quiet"] = flags["quiet"] or None
    flags["json"] = flags.pop("json_output") or None
    cfg = load_config(args.config, **flags)
    summary = run_valuation(cfg)
    if cfg.json_output:
        print(json.dumps(asdict(summary), sort_keys=True))
    elif not cfg.quiet:
        from rich.console import Console

        console = Console(soft_wrap=True)
        if summary.mode == "noop":
            console.print(
                f"no new rows in {cfg.table}@v{summary.table_version_read}: nothing to value, nothing written"
            )
            return 0
        console.print(
            f"[bold]{summary.mode}[/bold]: {summary.rows_valued} rows valued "
            f"({summary.rows_in_sample} in sample, {summary.rows_out_of_sample} out of sample) with "
            f"{summary.n_trainings} trainings; {summary.suspect_share:.1%} flagged suspect"
        )
        console.print(
            f"  {cfg.table} v{summary.table_version_read} -> v{summary.table_version_written}; "
            f"MLflow run {summary.run_id}; model {cfg.registered_model_name} v{summary.model_version} (alias current)"
        )
    return 0


def _run_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="value the rows of a Delta table and write the value columns back",
        description="Value the rows of a Delta table and write the value columns back with one MERGE. "
        "Every flag can also come from --config (flags win).",
    )
    add = run.add_argument
    add("--table", help="path of the source Delta table")
    add("--key", help="row-key column (unique, non-null)")
    add("--label", help="label column")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--features", help="comma-separated numeric feature columns (the features embedder)")
    source.add_argument("--embedding-col", help="column holding a precomputed embedding vector")
    source.add_argument("--image-col", help="column of image bytes or pixel arrays (needs --embedder, --weights)")
    add("--embedder", help="torchvision:NAME for --image-col")
    add("--weights", help="local path of the torchvision weights")
    add("--validation-table", help="a separate Delta table of validation rows")
    add("--validation-fraction", type=float, help="share of rows held out by hash of key (default 0.1)")
    add("--refit", choices=["auto", "always", "never"], help="refit policy (default auto)")
    add("--mlflow-uri", help="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    add("--experiment", help="MLflow experiment (default ecoval)")
    add("--model-name", help="registered valuation model (default ecoval_<table folder name>)")
    add("--clusters", type=int, help="number of clusters p (default from --budget)")
    add("--budget", type=int, help="most model trainings (default 80)")
    add("--seed", type=int, help="seed of every random choice (default 0)")
    add("--engine", choices=["spark", "delta-rs"], help="execution engine (default spark)")
    add("--config", help="YAML file with any of these flags (snake_case keys)")
    add("--quiet", action="store_true", help="print nothing but errors")
    add("--json", dest="json_output", action="store_true", help="print a machine-readable summary")
    run.set_defaults(handler=_run)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecoval", description="EcoVal data valuation for ML lakehouse pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    _run_parser(commands)
    demo = commands.add_parser("demo", help="value scikit-learn's digits with 10%% injected label noise")
    demo.add_argument("--seed", type=int, default=0, help="seed of the split, the noise and EcoVal (default 0)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ecoval`` command; returns the exit status (2 with one line on bad input)."""
    from ecoval_ops.exceptions import EcovalError

    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except EcovalError as e:
        print(f"ecoval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
