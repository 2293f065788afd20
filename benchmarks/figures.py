"""The plots of ``BENCHMARKS.md`` (``benchmarks/plots/*.png``), drawn from the result files.

Called by :mod:`report`; nothing here measures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["LABELS", "load_result", "plot_cost", "plot_quality", "plot_removal", "plot_scale"]

X1_PARTS = ["X1-cpu", "X1-phoneme", "X1-credit"]
"""The datasets of protocol X1, each run as a protocol of its own (``quality.py``)."""

LABELS = {
    "ecoval": "EcoVal",
    "ecoval_trees": "EcoVal (learner trees)",
    "knn_shapley": "KNN-Shapley (k=10)",
    "data_oob": "Data-OOB (200 models)",
    "loo": "Leave-one-out",
    "tmc_shapley": "TMC-Shapley",
    "random": "Random",
    "cleanlab": "cleanlab (RF 200, 5-fold)",
    "cleanlab_logistic": "cleanlab (logistic, 5-fold)",
    "knn_agreement": "kNN label agreement (k=20)",
}
"""How each method is named in tables and legends."""


def load_result(results: Path, name: str) -> dict[str, Any] | None:
    """The result file ``<name>.json`` of ``results``; None when the benchmark has not run."""
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot_removal(results: Path, plots: Path) -> None:
    """One removal figure per protocol file, and X1's as the mean of its three datasets' curves."""
    curves = {p.stem: json.loads(p.read_text()) for p in sorted((results / "curves").glob("*.json"))}
    parts = [curves[name] for name in X1_PARTS if name in curves]
    if len(parts) == 3:
        curves["X1"] = {
            "shares": parts[0]["shares"],
            "full_accuracy": float(np.mean([p["full_accuracy"] for p in parts])),
            "methods": {
                m: {
                    side: np.mean([p["methods"][m][side] for p in parts], axis=0).tolist() for side in ("top", "bottom")
                }
                for m in parts[0]["methods"]
            },
        }
    for name, c in curves.items():
        _removal_figure(name, c, plots / f"removal_{name}.png")


def _removal_figure(name: str, c: dict[str, Any], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    shares = [100 * s for s in c["shares"]]
    for side, ax in zip(("top", "bottom"), axes, strict=True):
        for method, curve in c["methods"].items():
            ax.plot(shares, curve[side], marker="o", ms=3, label=LABELS.get(method, method))
        ax.axhline(c["full_accuracy"], color="grey", ls=":", lw=1)
        ax.set_title(f"{name}: remove the {'highest' if side == 'top' else 'lowest'}-valued rows")
        ax.set_xlabel("% of training rows removed")
    axes[0].set_ylabel("test accuracy (retrained)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_quality(found: dict[str, dict[str, Any]], plots: Path) -> None:
    if not found:
        return
    # A method run on some protocols only (an option, quality.OPTIONS) stays out of the bars.
    methods = [m for m in next(iter(found.values()))["methods"] if all(m in r["methods"] for r in found.values())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(methods)
    for metric, ax in zip(("auroc", "f1"), axes, strict=True):
        for j, method in enumerate(methods):
            means = [np.mean(r["methods"][method][metric]) for r in found.values()]
            sds = [np.std(r["methods"][method][metric]) for r in found.values()]
            ax.bar(np.arange(len(found)) + j * width, means, width, yerr=sds, label=LABELS.get(method, method))
        ax.set_xticks(np.arange(len(found)) + 0.4 - width / 2, list(found))
        ax.set_title(f"noise detection {metric.upper()} (mean ± sd over seeds)")
    axes[0].set_ylim(0.4, 1.0)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plots / "quality_auroc_f1.png", dpi=110)
    plt.close(fig)


def plot_cost(results: Path, found: dict[str, dict[str, Any]], plots: Path) -> None:
    cost = load_result(results, "cost")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    p1 = found.get("P1")
    if p1 is not None:
        for method, m in p1["methods"].items():
            axes[0].scatter(max(m["trainings"], 1), np.mean(m["auroc"]), s=40, label=LABELS.get(method, method))
        axes[0].set_xscale("log")
        axes[0].set_xlabel("model trainings per valuation (0 shown as 1)")
        axes[0].set_ylabel("noise AUROC")
        axes[0].set_title("P1: quality against cost")
        axes[0].legend(fontsize=7)
    if cost is not None:
        budgets = [int(b) for b in cost["tmc_stability_by_budget"]]
        axes[1].plot(budgets, list(cost["tmc_stability_by_budget"].values()), marker="o", label="TMC-Shapley")
        axes[1].scatter([cost["ecoval_trainings"]], [cost["ecoval_stability"]], color="C3", s=60, label="EcoVal")
        axes[1].axhline(cost["ecoval_stability"], color="C3", ls=":", lw=1)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("trainings")
        axes[1].set_ylabel("rank stability (Spearman between two seeds)")
        axes[1].set_title("P1: rank stability against trainings")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plots / "quality_vs_cost.png", dpi=110)
    plt.close(fig)


def plot_scale(results: Path, plots: Path) -> None:
    r = load_result(results, "scale")
    if r is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, by_n in r.items():
        if mode not in ("incore", "spark"):
            continue
        ns = sorted(int(n) for n in by_n if "error" not in by_n[n])
        total = "end_to_end" if mode == "spark" else "fit"
        wall = [by_n[str(n)][total]["wall_s"] for n in ns]
        peak = [max(f["peak_rss_mb"] for f in by_n[str(n)].values()) for n in ns]
        label = {"incore": "in-core EcoVal.fit", "spark": "Spark end to end (with MERGE)"}.get(mode, mode)
        axes[0].plot(ns, wall, marker="o", label=label)
        axes[1].plot(ns, peak, marker="o", label=label)
    for ax, title in zip(axes, ("wall time (s)", "peak RSS of the Python process (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plots / "scale.png", dpi=110)
    plt.close(fig)
