"""What was tried to settle EcoVal's defaults: the label vote (neighbours, halo, prior) and c_kappa.

The method spec leaves ``c_kappa`` to the benchmarks, and the vote's departures from it
(``vote_neighbors``, ``halo_clusters``, ``prior_weight``) are settled here too. Each setting runs
on every quality protocol and seed of :mod:`quality` (same splits, same metrics); the mean
AUROC, F1 and rm20 per protocol go to ``results/<name>.json`` and into BENCHMARKS.md. The
defaults are chosen on seeds 0-4 (``tuning``) and confirmed on seeds 5-9 (``tuning_confirm``).

Usage: ``python benchmarks/tuning.py [--protocols P1 D1] [--seeds 0 1 2 3 4] [--name tuning] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from quality import PROTOCOLS, RESULTS, SEEDS, X1_PARTS, auroc, ecoval, f1, make_split, removal_curves
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from ecoval_ops.valuation import EcoVal

SETTINGS = [
    {"vote_neighbors": 10, "halo_clusters": 0, "prior_weight": 0.0, "c_kappa": 5.0},
    {"vote_neighbors": 20, "halo_clusters": 0, "prior_weight": 0.0, "c_kappa": 20.0},
    {"vote_neighbors": 20, "halo_clusters": 0, "prior_weight": 5.0, "c_kappa": 20.0},
    {"vote_neighbors": 20, "halo_clusters": 0, "prior_weight": 20.0, "c_kappa": 5.0},
    {"vote_neighbors": 20, "halo_clusters": 0, "prior_weight": 20.0, "c_kappa": 20.0},
    {"vote_neighbors": 20, "halo_clusters": 0, "prior_weight": 50.0, "c_kappa": 20.0},
    {"vote_neighbors": 20, "halo_clusters": 2, "prior_weight": 20.0, "c_kappa": 20.0},
    {"vote_neighbors": 20, "halo_clusters": 4, "prior_weight": 20.0, "c_kappa": 20.0},
    {"vote_neighbors": 40, "halo_clusters": 0, "prior_weight": 20.0, "c_kappa": 20.0},
]


def agreement(Z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """``agree_i`` of spec section 4 over all rows: kernel-weighted share of same-label neighbours."""
    distances, index = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    distances, index = distances[:, 1:], index[:, 1:]
    s = np.exp(-((distances / (np.median(distances) + 1e-12)) ** 2))
    return (s * (y[index] == y[:, None])).sum(axis=1) / (s.sum(axis=1) + 1e-12)


def space_rows(protocols: list[str], seeds: list[int]) -> dict[str, object]:
    """AUROC of ``-agree_i`` in the standardised space and in a coefficient-weighted one."""
    ks = (10, 20, 40)
    columns = [f"{space} k={k}" for space in ("standardised", "coefficient-weighted") for k in ks]
    rows = {}
    for name in protocols:
        scores = np.zeros((len(seeds), len(columns)))
        for i, seed in enumerate(seeds):
            s = make_split(PROTOCOLS[name], seed)
            X = (s.X_train - s.X_train.mean(axis=0)) / (s.X_train.std(axis=0) + 1e-12)
            weight = np.abs(LogisticRegression(max_iter=2000).fit(X, s.y_train).coef_).mean(axis=0)
            spaces = [X] * len(ks) + [X * weight] * len(ks)
            scores[i] = [auroc(agreement(Z, s.y_train, k), s.is_noisy) for Z, k in zip(spaces, ks * 2, strict=True)]
        rows[name] = scores.mean(axis=0).tolist()
    return {"columns": columns, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=["P1", "P3", "M1", "D1", *X1_PARTS], choices=list(PROTOCOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--name", default="tuning", help="results file name: tuning (seeds 0-4) or tuning_confirm")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for name in args.protocols:
        splits = [make_split(PROTOCOLS[name], seed) for seed in args.seeds]
        for params in SETTINGS:
            scores: dict[str, list[float]] = {"auroc": [], "f1": [], "rm20": []}
            for seed, split in zip(args.seeds, splits, strict=True):
                values = ecoval(split, seed, **params).values
                scores["auroc"].append(auroc(values, split.is_noisy))
                scores["f1"].append(f1(values, split.is_noisy))
                scores["rm20"].append(removal_curves(split, values, seed).at(0.2))
            default = all(getattr(EcoVal(), key) == value for key, value in params.items())
            row = {"protocol": name, **params, "default": default, **{m: float(np.mean(v)) for m, v in scores.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps(
            {
                "protocol": args.name,
                "seeds": args.seeds,
                "settings": SETTINGS,
                "rows": rows,
                "space": space_rows(args.protocols, args.seeds),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
