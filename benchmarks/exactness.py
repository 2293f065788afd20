"""Exactness protocol (benchmarks.md): EcoVal's cluster values against brute-force Shapley.

On real data (pol_722 and digits, 300 training rows, 100 validation rows, 10% label noise) the
rows are clustered into p = 4, 6 and 8 clusters; the cluster game ``G(S) = U(rows of S)`` is
trained on all ``2^p`` coalitions with EcoVal's own learner, utility and training sample, and its
exact Shapley values are set beside EcoVal's ``phi`` (computed from its ``2 + p + p(p-1)/2``
trainings only). Errors are reported relative to ``|U(B) - U(empty)|``, the total being shared,
and as ``sum |phi - exact| / sum |exact|`` (the total can be small next to the values' spread
when clusters help and hurt in turn).
Rows: ``exact_shapley`` on 12 rows against EcoVal's row values on the same 12 rows (3 clusters asked for).

Writes ``results/exactness.json``.

Usage: ``python benchmarks/exactness.py [--seeds 0 1 2 3 4] [--clusters 4 6 8] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from quality import PROTOCOLS, RESULTS, SEEDS, Protocol, make_split
from scipy.stats import spearmanr

from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.baselines import exact_shapley, shapley_from_game
from ecoval_ops.valuation.learners import learner_from_name
from ecoval_ops.valuation.utility import per_example_utility

DATA = {"pol_722": PROTOCOLS["P1"], "digits": PROTOCOLS["D1"]}
SMALL = (300, 100, 100)


def cluster_game(p: int, protocol: Protocol, seed: int) -> dict[str, float]:
    """EcoVal's phi against the exact Shapley values of its p-cluster game."""
    small = Protocol(protocol.name, protocol.dataset, SMALL, 0.1)
    s = make_split(small, seed)
    ev = EcoVal(n_clusters=p, seed=seed, min_cluster_frac=0.0, device="cpu")
    plan = ev.prepare(s.X_train, s.y_train, s.X_val, s.y_val)
    ev.fit_plan(plan, ev.train_masks(plan, np.arange(plan.n_masks)), s.X_train, s.y_train, n_trainings=0)
    p_fit = ev.n_clusters_
    coalitions = np.arange(1 << p_fit)
    members = (coalitions[:, None] >> np.arange(p_fit)[None, :]) & 1
    masks = members[:, plan.sample_clusters].astype(bool)
    proba = learner_from_name("logistic", "cpu").predict_proba_masked(
        plan.X, plan.y, masks[1:], plan.X_val, n_classes=plan.classes.size, seed=plan.seed
    )
    game = np.concatenate([[plan.empty.mean()], per_example_utility(proba, plan.y_val, ev.utility).mean(axis=1)])
    exact = shapley_from_game(game)
    phi = ev.model_.game.phi
    scale = abs(game[-1] - game[0])
    spread = float(np.abs(exact).sum())
    return {
        "p": p_fit,
        "trainings_exact": int(coalitions.size - 1),
        "total_gain": float(game[-1] - game[0]),
        "max_abs_error_rel": float(np.max(np.abs(phi - exact)) / scale),
        "mean_abs_error_rel": float(np.mean(np.abs(phi - exact)) / scale),
        "l1_error_rel": float(np.abs(phi - exact).sum() / spread),
        "spearman": float(spearmanr(phi, exact).statistic),
        "gammas_clipped": bool(ev.model_.game.gammas_clipped),
    }


def rows(seed: int) -> dict[str, float]:
    """EcoVal's row values on 12 rows against their exact Shapley values (4095 trainings)."""
    s = make_split(Protocol("rows", "2dplanes_727", (12, 100, 10), 0.1), seed)
    exact = np.asarray(exact_shapley(s.X_train, s.y_train, s.X_val, s.y_val, seed=seed, device="cpu"))
    ev = EcoVal(n_clusters=3, seed=seed, min_cluster_frac=0.0, k_neighbors=3, device="cpu")
    values = ev.fit(s.X_train, s.y_train, s.X_val, s.y_val).values_
    scale = abs(exact.sum())
    return {
        "max_abs_error_rel": float(np.max(np.abs(values - exact)) / scale),
        "spearman": float(spearmanr(values, exact).statistic),
        "sum_ecoval": float(values.sum()),
        "sum_exact": float(exact.sum()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--clusters", nargs="+", type=int, default=[4, 6, 8])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    games = [
        {"dataset": name, "seed": seed, **cluster_game(p, protocol, seed)}
        for name, protocol in DATA.items()
        for p in args.clusters
        for seed in args.seeds
    ]
    row_games = [{"seed": seed, **rows(seed)} for seed in args.seeds]
    result = {"protocol": "exactness", "seeds": args.seeds, "clusters": games, "rows": row_games}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exactness.json").write_text(json.dumps(result, indent=2) + "\n")
    for g in games:
        print(json.dumps(g))
    for r in row_games:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
