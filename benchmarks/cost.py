"""Cost protocol (benchmarks.md): EcoVal's trainings against TMC-Shapley's at equal rank stability.

On P1 (pol_722, 1000/100/300, 20% noise), rank stability is the Spearman correlation between
the row values of two runs of a method on the same split that differ only in the method's own
randomness (EcoVal: clustering and halves seed; TMC-Shapley: permutations and training seed).
TMC-Shapley runs at growing budgets; the smallest budget whose stability reaches EcoVal's is set
against EcoVal's training count. Quality (noise AUROC) is recorded beside it.

Writes ``results/cost.json``.

Usage: ``python benchmarks/cost.py [--seeds 0 1] [--budgets 1000 2000 4000 8000] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from quality import PROTOCOLS, RESULTS, auroc, ecoval, make_split
from scipy.stats import spearmanr

from ecoval_ops.valuation.baselines import tmc_shapley

SECOND_RUN = 1000
"""Offset of the second run's seed."""


def _pair(method: str, split_seed: int, budget: int = 0) -> dict[str, float]:
    split = make_split(PROTOCOLS["P1"], split_seed)
    runs, walls = [], []
    trainings = 0
    for run_seed in (split_seed, split_seed + SECOND_RUN):
        start = time.perf_counter()
        if method == "ecoval":
            result = ecoval(split, run_seed)
        else:
            result = tmc_shapley(split.X_train, split.y_train, split.X_val, split.y_val, budget=budget, seed=run_seed)
        values, trainings = result.values, int(result.n_trainings or 0)
        walls.append(time.perf_counter() - start)
        runs.append(values)
    return {
        "method": method,
        "split_seed": split_seed,
        "trainings": trainings,
        "stability": float(spearmanr(runs[0], runs[1]).statistic),
        "auroc": float(np.mean([auroc(v, split.is_noisy) for v in runs])),
        "wall_s": float(np.mean(walls)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000, 2000, 4000, 8000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        rows.append(_pair("ecoval", seed))
        print(json.dumps(rows[-1]), flush=True)
        for budget in args.budgets:
            rows.append(_pair("tmc_shapley", seed, budget))
            print(json.dumps(rows[-1]), flush=True)
    eco = [r for r in rows if r["method"] == "ecoval"]
    target = float(np.mean([r["stability"] for r in eco]))
    by_budget = {
        b: float(np.mean([r["stability"] for r in rows if r["method"] == "tmc_shapley" and r["trainings"] == b]))
        for b in args.budgets
    }
    reached = [b for b, s in by_budget.items() if s >= target]
    ecoval_trainings = int(eco[0]["trainings"])
    result = {
        "protocol": "cost",
        "dataset": PROTOCOLS["P1"].dataset,
        "seeds": args.seeds,
        "ecoval_trainings": ecoval_trainings,
        "ecoval_stability": target,
        "tmc_stability_by_budget": {str(b): s for b, s in by_budget.items()},
        "tmc_budget_at_equal_stability": reached[0] if reached else None,
        "ratio_at_least": (reached[0] if reached else max(args.budgets)) / ecoval_trainings,
        "ratio_is_lower_bound": not reached,
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
