"""Quality protocols of benchmarks.md: noisy-label detection and point removal.

Each protocol draws a train/valid/test split, flips ``round(rate * n)`` training labels (and the
same share of validation labels) to another class chosen uniformly, values the training rows
with every method, and records per seed:

- ``auroc``: AUROC of ``-value`` against the flipped rows;
- ``f1``: F1 of the low group of a 2-means split of the values;
- ``rm20``: test accuracy of logistic regression retrained without the top 20% by value
  (lower is better);
- ``wall_s``: valuation time; ``trainings``: model fits per valuation (0 for none).

Writes ``benchmarks/results/<protocol>.json`` in the shape the checks read.

Usage: ``python benchmarks/quality.py --protocols P1 P3 M1 --seeds 0 1 2``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.baselines import data_oob, knn_shapley, leave_one_out, tmc_shapley

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Protocol:
    """One row of the protocol table of benchmarks.md."""

    name: str
    dataset: str
    split: tuple[int, int, int]
    noise: float


PROTOCOLS = {
    "P1": Protocol("P1", "pol_722", (1000, 100, 300), 0.2),
    "P3": Protocol("P3", "2dplanes_727", (2000, 200, 1000), 0.1),
    "M1": Protocol("M1", "mnist_5k", (2000, 500, 2500), 0.1),
    "D1": Protocol("D1", "digits", (1000, 300, 497), 0.1),
    "X1-cpu": Protocol("X1-cpu", "cpu_act_761", (1000, 100, 300), 0.1),
    "X1-phoneme": Protocol("X1-phoneme", "phoneme_1489", (1000, 100, 300), 0.1),
    "X1-credit": Protocol("X1-credit", "default-of-credit-card-clients_42477", (1000, 100, 300), 0.1),
}


@dataclass(frozen=True)
class Split:
    """One draw of a protocol: noisy train and valid splits, a clean test split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    noisy: np.ndarray


def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "digits":
        X, y = load_digits(return_X_y=True)
        return X.astype(np.float64), y.astype(np.int64)
    path = DATASETS / f"{dataset}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the shared datasets folder must sit beside the project")
    with np.load(path, allow_pickle=False) as f:
        X, y = f["X"].astype(np.float64), f["y"].astype(np.int64)
    if dataset == "mnist_5k":
        X = X / 255.0
    return X, y


def _flip(y: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    noisy = np.sort(rng.choice(y.size, size=round(rate * y.size), replace=False))
    out = y.copy()
    out[noisy] = (y[noisy] + rng.integers(1, n_classes, size=noisy.size)) % n_classes
    return out, noisy


def make_split(protocol: Protocol, seed: int) -> Split:
    """Draw the split of ``protocol`` for ``seed`` with its label noise."""
    X, y = _load(protocol.dataset)
    rng = np.random.default_rng(seed)
    n_tr, n_va, n_te = protocol.split
    order = rng.permutation(y.size)[: n_tr + n_va + n_te]
    tr, va, te = order[:n_tr], order[n_tr : n_tr + n_va], order[n_tr + n_va :]
    if protocol.dataset == "mnist_5k":
        mean = X[tr].mean(axis=0)
        _, _, vt = np.linalg.svd(X[tr] - mean, full_matrices=False)
        X = (X - mean) @ vt[:64].T
    k = int(y.max()) + 1
    y_train, noisy = _flip(y[tr], protocol.noise, k, rng)
    y_val, _ = _flip(y[va], protocol.noise, k, rng)
    return Split(X[tr], y_train, X[va], y_val, X[te], y[te], noisy)


def _ecoval(s: Split, seed: int) -> tuple[np.ndarray, int]:
    ev = EcoVal(seed=seed).fit(s.X_train, s.y_train, s.X_val, s.y_val)
    return ev.values_, ev.n_trainings_


METHODS: dict[str, Callable[[Split, int], tuple[np.ndarray, int]]] = {
    "ecoval": _ecoval,
    "knn_shapley": lambda s, seed: (knn_shapley(s.X_train, s.y_train, s.X_val, s.y_val, k=10), 0),
    "data_oob": lambda s, seed: (data_oob(s.X_train, s.y_train, s.X_val, s.y_val, n_estimators=200, seed=seed), 200),
    "loo": lambda s, seed: (leave_one_out(s.X_train, s.y_train, s.X_val, s.y_val, seed=seed), s.y_train.size + 1),
    "tmc_shapley": lambda s, seed: (
        tmc_shapley(s.X_train, s.y_train, s.X_val, s.y_val, budget=TMC_BUDGET, seed=seed),
        TMC_BUDGET,
    ),
    "random": lambda s, seed: (np.random.default_rng(seed + 10_000).random(s.y_train.size), 0),
}
TMC_BUDGET = 3000


def _removal_accuracy(s: Split, values: np.ndarray, share: float) -> float:
    keep = np.argsort(-values, kind="stable")[round(share * values.size) :]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(model.fit(s.X_train[keep], s.y_train[keep]).score(s.X_test, s.y_test))


def _f1(values: np.ndarray, noisy: np.ndarray) -> float:
    km = KMeans(n_clusters=2, n_init=10, random_state=0).fit(values.reshape(-1, 1))
    low = int(np.argmin(km.cluster_centers_.ravel()))
    truth = np.zeros(values.size, dtype=bool)
    truth[noisy] = True
    return float(f1_score(truth, km.labels_ == low))


def run_protocol(protocol: Protocol, seeds: list[int], methods: list[str]) -> dict[str, object]:
    """All methods on all seeds of one protocol, in the results shape of benchmarks/results."""
    out: dict[str, dict[str, object]] = {
        m: {"auroc": [], "f1": [], "rm20": [], "trainings": 0, "wall_s": []} for m in methods
    }
    for seed in seeds:
        split = make_split(protocol, seed)
        truth = np.zeros(split.y_train.size, dtype=bool)
        truth[split.noisy] = True
        for name in methods:
            start = time.perf_counter()
            values, trainings = METHODS[name](split, seed)
            record = out[name]
            record["wall_s"].append(time.perf_counter() - start)  # type: ignore[union-attr]
            record["auroc"].append(float(roc_auc_score(truth, -values)))  # type: ignore[union-attr]
            record["f1"].append(_f1(values, split.noisy))  # type: ignore[union-attr]
            record["rm20"].append(_removal_accuracy(split, values, 0.2))  # type: ignore[union-attr]
            record["trainings"] = trainings
    return {
        "protocol": protocol.name,
        "dataset": protocol.dataset,
        "split": list(protocol.split),
        "noise": protocol.noise,
        "seeds": seeds,
        "methods": out,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoVal quality protocols (benchmarks.md)")
    parser.add_argument("--protocols", nargs="+", default=["P1", "P3", "M1"], choices=sorted(PROTOCOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=["ecoval", "knn_shapley", "data_oob", "loo", "random"], choices=sorted(METHODS)
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.protocols:
        result = run_protocol(PROTOCOLS[name], args.seeds, args.methods)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: {result['dataset']} {result['split']} noise {result['noise']}")
        for method, r in result["methods"].items():  # type: ignore[attr-defined]
            print(
                f"  {method:12s} auroc {np.mean(r['auroc']):.3f}±{np.std(r['auroc']):.3f}  "
                f"f1 {np.mean(r['f1']):.3f}  rm20 {np.mean(r['rm20']):.3f}  "
                f"trainings {r['trainings']}  wall {np.median(r['wall_s']):.2f}s"
            )


if __name__ == "__main__":
    main()
