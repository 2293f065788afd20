"""Quality protocols of benchmarks.md: noisy-label detection and point removal.

Each protocol draws a train/valid/test split, flips ``round(rate * n)`` training labels (and the
same share of validation labels) to another class chosen uniformly, values the training rows
with every method, and records per seed:

- ``auroc``: AUROC of ``-value`` against the flipped rows;
- ``f1``: F1 of the low group of a 2-means split of the values (OpenDataVal's form, comparable
  with published tables);
- ``f1_noise_cut``: F1 of the ``round(rate * n)`` lowest values (the cut a user who knows the
  noise rate makes; precision, recall and F1 are then equal);
- ``suspect_precision`` / ``suspect_recall`` (EcoVal): of the rows flagged ``ecoval_suspect``
  against the flipped rows;
- ``rm20``: test accuracy after removing the top 20% by value and retraining (lower is better);
- ``wall_s``: valuation time; ``trainings``: model fits per valuation, the most over the seeds
  (EcoVal's p can shrink when small clusters merge; 0 for none).

The retrained learner is logistic regression (L2, C = 1, the project's batched L-BFGS solver:
the 21 models of a removal curve train in one call, ``ecoval_ops.valuation.removal``). The
removal curves (top and bottom 5% to 50%, mean over seeds) go to
``results/curves/<protocol>.json`` for the plots; the per-protocol results keep the shape the
external checks read. X1 runs its three datasets as ``X1-cpu``, ``X1-phoneme`` and
``X1-credit`` and also writes ``X1.json``, their per-seed lists joined (dataset by dataset).

Usage: ``python benchmarks/quality.py [--protocols P1 D1] [--seeds 0 1 2 3 4] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from figures import X1_PARTS
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score, roc_auc_score

from ecoval_ops.valuation import EcoVal, FeatureSpace
from ecoval_ops.valuation.baselines import (
    confident_learning,
    data_oob,
    knn_agreement,
    knn_shapley,
    leave_one_out,
    tmc_shapley,
)
from ecoval_ops.valuation.removal import SHARES, RemovalCurve, removal_curve
from ecoval_ops.valuation.result import ValuationResult

DATASETS = Path(os.environ.get("ECOVAL_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = [0, 1, 2, 3, 4]
TMC_BUDGET = 2000
"""Trainings per TMC-Shapley valuation in the quality protocols (the cost protocol varies it)."""


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
    X_pool: np.ndarray
    y_pool: np.ndarray
    pool_noisy: np.ndarray
    y_train_clean: np.ndarray

    @property
    def is_noisy(self) -> np.ndarray:
        """``(n,)`` True for the flipped training rows."""
        truth = np.zeros(self.y_train.size, dtype=bool)
        truth[self.noisy] = True
        return truth


def load_dataset(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a dataset of ``shared/datasets`` (or sklearn's digits)."""
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


def flip_labels(y: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move ``round(rate * n)`` labels to another class chosen uniformly; return them and their rows."""
    noisy = np.sort(rng.choice(y.size, size=round(rate * y.size), replace=False))
    out = y.copy()
    out[noisy] = (y[noisy] + rng.integers(1, n_classes, size=noisy.size)) % n_classes
    return out, noisy


def make_split(protocol: Protocol, seed: int, *, pool: int = 0) -> Split:
    """Draw the split of ``protocol`` for ``seed`` with its label noise.

    ``pool`` further rows, disjoint from the split and noisy at the same rate, are drawn for the
    out-of-sample protocol (none by default).
    """
    X, y = load_dataset(protocol.dataset)
    rng = np.random.default_rng(seed)
    n_tr, n_va, n_te = protocol.split
    order = rng.permutation(y.size)
    if n_tr + n_va + n_te + pool > y.size:
        raise ValueError(f"{protocol.dataset} has {y.size} rows; the split and pool need {n_tr + n_va + n_te + pool}")
    tr, va, te = order[:n_tr], order[n_tr : n_tr + n_va], order[n_tr + n_va : n_tr + n_va + n_te]
    po = order[n_tr + n_va + n_te : n_tr + n_va + n_te + pool]
    if protocol.dataset == "mnist_5k":
        mean = X[tr].mean(axis=0)
        _, _, vt = np.linalg.svd(X[tr] - mean, full_matrices=False)
        X = (X - mean) @ vt[:64].T
    k = int(y.max()) + 1
    y_train, noisy = flip_labels(y[tr], protocol.noise, k, rng)
    y_val, _ = flip_labels(y[va], protocol.noise, k, rng)
    y_pool, pool_noisy = flip_labels(y[po], protocol.noise, k, rng)
    return Split(X[tr], y_train, X[va], y_val, X[te], y[te], noisy, X[po], y_pool, pool_noisy, y[tr])


def ecoval(s: Split, seed: int, **params: object) -> ValuationResult:
    """EcoVal's in-sample result on ``s`` (default parameters unless given)."""
    return EcoVal(seed=seed, **params).fit(s.X_train, s.y_train, s.X_val, s.y_val).result_  # type: ignore[arg-type]


METHODS: dict[str, Callable[[Split, int], ValuationResult]] = {
    "ecoval": ecoval,
    "ecoval_trees": lambda s, seed: ecoval(s, seed, learner="trees"),
    "knn_shapley": lambda s, seed: knn_shapley(s.X_train, s.y_train, s.X_val, s.y_val, k=10),
    "data_oob": lambda s, seed: data_oob(s.X_train, s.y_train, s.X_val, s.y_val, n_estimators=200, seed=seed),
    "loo": lambda s, seed: leave_one_out(s.X_train, s.y_train, s.X_val, s.y_val, seed=seed),
    "tmc_shapley": lambda s, seed: tmc_shapley(s.X_train, s.y_train, s.X_val, s.y_val, budget=TMC_BUDGET, seed=seed),
    "cleanlab": lambda s, seed: confident_learning(s.X_train, s.y_train, s.X_val, s.y_val, seed=seed),
    "cleanlab_logistic": lambda s, seed: confident_learning(
        s.X_train, s.y_train, s.X_val, s.y_val, learner="logistic", seed=seed
    ),
    "knn_agreement": lambda s, seed: knn_agreement(s.X_train, s.y_train, s.X_val, s.y_val, k=20),
    "random": lambda s, seed: ValuationResult(
        np.random.default_rng(seed + 10_000).random(s.y_train.size), method="random", n_trainings=0
    ),
}
"""Every method of the harness through the one API: a :class:`ValuationResult` with its trainings."""

OPTIONS = {"ecoval_trees"}
"""Methods run only when named (``--methods``): EcoVal with an option for some data, not its defaults.
``learner="trees"`` is for tabular sets; on M1's 10 classes x 64 dimensions it takes minutes a seed."""


def auroc(values: np.ndarray, is_noisy: np.ndarray) -> float:
    """Noise-detection AUROC of ``-values``."""
    return float(roc_auc_score(is_noisy, -values))


def f1(values: np.ndarray, is_noisy: np.ndarray) -> float:
    """F1 of the lower group of a 2-means split of the values against the noisy rows."""
    km = KMeans(n_clusters=2, n_init=10, random_state=0).fit(values.reshape(-1, 1))
    low = int(np.argmin(km.cluster_centers_.ravel()))
    return float(f1_score(is_noisy, km.labels_ == low))


def f1_noise_cut(values: np.ndarray, is_noisy: np.ndarray) -> float:
    """F1 of the ``is_noisy.sum()`` lowest values against the noisy rows."""
    flagged = np.zeros(values.size, dtype=bool)
    flagged[np.argsort(values, kind="stable")[: int(is_noisy.sum())]] = True
    return float(f1_score(is_noisy, flagged))


def suspect_scores(result: ValuationResult, is_noisy: np.ndarray) -> tuple[float, float]:
    """Precision and recall of ``ecoval_suspect`` against the noisy rows (precision 0 when none is flagged)."""
    flagged = result.suspect
    return float(is_noisy[flagged].mean()) if flagged.any() else 0.0, float(flagged[is_noisy].mean())


def restored(result: ValuationResult, s: Split) -> float:
    """Share of the flipped rows flagged suspect whose suggested label is the one before the flip.

    The suggestion (``ecoval_suggested_label``) is offered on suspect rows only.
    """
    flagged = s.is_noisy & result.suspect
    if not flagged.any():
        return 0.0
    return float(np.mean(np.asarray(result.suggested_label)[flagged] == s.y_train_clean[flagged]))


def removal_curves(s: Split, values: np.ndarray, seed: int) -> RemovalCurve:
    """The removal curve of ``values`` on the clean test split, logistic regression retrained."""
    space = FeatureSpace.fit(s.X_train, max_dims=None)
    return removal_curve(
        space.standardise(s.X_train),
        s.y_train,
        values,
        space.standardise(s.X_test),
        s.y_test,
        n_classes=int(max(s.y_train.max(), s.y_test.max())) + 1,
        seed=seed,
    )


def run_protocol(
    protocol: Protocol, seeds: list[int], methods: list[str]
) -> tuple[dict[str, object], dict[str, object]]:
    """All methods on all seeds of one protocol.

    Returns:
        The result (the shape of ``benchmarks/results/<protocol>.json``) and the removal curves.
    """
    out: dict[str, dict[str, object]] = {
        m: {"auroc": [], "f1": [], "rm20": [], "trainings": 0, "wall_s": []} for m in methods
    }
    curves: dict[str, dict[str, list[list[float]]]] = {m: {"top": [], "bottom": []} for m in methods}
    full: list[float] = []
    for seed in seeds:
        split = make_split(protocol, seed)
        for name in methods:
            start = time.perf_counter()
            result = METHODS[name](split, seed)
            values, trainings = np.asarray(result), int(result.n_trainings or 0)
            elapsed = time.perf_counter() - start
            curve = removal_curves(split, values, seed)
            record = out[name]
            record["wall_s"].append(elapsed)  # type: ignore[union-attr]
            record["auroc"].append(auroc(values, split.is_noisy))  # type: ignore[union-attr]
            record["f1"].append(f1(values, split.is_noisy))  # type: ignore[union-attr]
            record.setdefault("f1_noise_cut", []).append(f1_noise_cut(values, split.is_noisy))  # type: ignore[union-attr]
            record["rm20"].append(curve.at(0.2))  # type: ignore[union-attr]
            record["trainings"] = max(int(record["trainings"]), trainings)  # type: ignore[call-overload]
            if result.intrinsic is not None:
                record.setdefault("auroc_alpha", []).append(auroc(result.intrinsic, split.is_noisy))  # type: ignore[union-attr]
            if result.suggested_label is not None:
                record.setdefault("restored", []).append(restored(result, split))  # type: ignore[union-attr]
                precision, recall = suspect_scores(result, split.is_noisy)
                record.setdefault("suspect_precision", []).append(precision)  # type: ignore[union-attr]
                record.setdefault("suspect_recall", []).append(recall)  # type: ignore[union-attr]
            curves[name]["top"].append(list(curve.top))
            curves[name]["bottom"].append(list(curve.bottom))
        full.append(curve.full)
    result = {
        "protocol": protocol.name,
        "dataset": protocol.dataset,
        "split": list(protocol.split),
        "noise": protocol.noise,
        "seeds": seeds,
        "methods": out,
    }
    curve_file = {
        "protocol": protocol.name,
        "shares": list(SHARES),
        "full_accuracy": float(np.mean(full)),
        "methods": {
            m: {side: np.mean(c[side], axis=0).tolist() for side in ("top", "bottom")} for m, c in curves.items()
        },
    }
    return result, curve_file


def join_x1(parts: list[dict[str, object]]) -> dict[str, object]:
    """``X1.json``: the three X1 datasets' per-seed lists joined, dataset by dataset."""
    first = parts[0]
    methods: dict[str, dict[str, object]] = {}
    for name in first["methods"]:  # type: ignore[attr-defined]
        records = [p["methods"][name] for p in parts]  # type: ignore[index]
        lists = [key for key, value in records[0].items() if isinstance(value, list)]
        methods[name] = {key: [x for r in records for x in r[key]] for key in lists} | {
            "trainings": max(r["trainings"] for r in records)
        }
    return {
        "protocol": "X1",
        "dataset": ", ".join(str(p["dataset"]) for p in parts),
        "split": first["split"],
        "noise": first["noise"],
        "seeds": first["seeds"],
        "methods": methods,
    }


def merged(
    folder: Path, name: str, result: dict[str, object], curves: dict[str, object]
) -> tuple[dict[str, object], dict[str, object]]:
    """``result`` and ``curves`` added to the protocol's files in ``folder`` (same seeds), method by method."""
    old = json.loads((folder / f"{name}.json").read_text())
    if old["seeds"] != result["seeds"]:
        raise SystemExit(f"{name}: results for seeds {old['seeds']} cannot take methods run on {result['seeds']}")
    old_curves = json.loads((folder / "curves" / f"{name}.json").read_text())
    old["methods"].update(result["methods"])  # type: ignore[arg-type]
    old_curves["methods"].update(curves["methods"])  # type: ignore[arg-type]
    return old, old_curves


def summary_line(result: dict[str, object]) -> str:
    """One line per method: mean AUROC, F1, rm20, trainings, median wall time."""
    lines = [f"{result['protocol']}: {result['dataset']} {result['split']} noise {result['noise']}"]
    for method, r in result["methods"].items():  # type: ignore[attr-defined]
        lines.append(
            f"  {method:12s} auroc {np.mean(r['auroc']):.3f}±{np.std(r['auroc']):.3f}  "
            f"f1 {np.mean(r['f1']):.3f}  rm20 {np.mean(r['rm20']):.3f}  "
            f"trainings {r['trainings']}  wall {np.median(r['wall_s']):.2f}s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoVal quality protocols (benchmarks.md)")
    parser.add_argument("--protocols", nargs="+", default=["P1", "P3", "M1", "D1", "X1"], choices=[*PROTOCOLS, "X1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in OPTIONS], choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", action="store_true", help="add the methods run to the results in --out instead of replacing them"
    )
    args = parser.parse_args(argv)
    (args.out / "curves").mkdir(parents=True, exist_ok=True)
    names = [p for name in args.protocols for p in (X1_PARTS if name == "X1" else [name])]
    results = {}
    for name in names:
        result, curves = run_protocol(PROTOCOLS[name], args.seeds, args.methods)
        if args.merge:
            result, curves = merged(args.out, name, result, curves)
        results[name] = result
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "curves" / f"{name}.json").write_text(json.dumps(curves, indent=2) + "\n")
        print(summary_line(result), flush=True)
    if all(p in results for p in X1_PARTS):
        joined = join_x1([results[p] for p in X1_PARTS])
        (args.out / "X1.json").write_text(json.dumps(joined, indent=2) + "\n")
        print(summary_line(joined), flush=True)


if __name__ == "__main__":
    main()
