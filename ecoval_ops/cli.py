"""The ``ecoval`` command."""

from __future__ import annotations

import argparse
import sys

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecoval", description="EcoVal data valuation for ML lakehouse pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="value scikit-learn's digits with 10%% injected label noise")
    demo.add_argument("--seed", type=int, default=0, help="seed of the split, the noise and EcoVal (default 0)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ecoval`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
