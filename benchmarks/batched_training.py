"""Batched LCO training against the same masked models trained one by one (benchmarks.md).

mnist_5k, pixels / 255, PCA to 64 dims, 2000 training rows, 500 validation rows; the 80 masks
of an EcoVal run with p = 12 (B, H, 12 LCO, 66 pairs). Three one-by-one references, each timed
in the same run (medians over repeats) and reported as a ratio to the batched time:

- ``one_by_one_warm``: the same L-BFGS, warm start and tolerance, one model per call;
- ``one_by_one_cold``: each model on its own rows from a zero start (one model per process);
- ``sklearn``: ``LogisticRegression(C=1)`` (lbfgs) per mask, the usual way to do it.

The leave-cluster-out differences of the batched and the one-by-one path are compared so that
speed is not bought with a worse optimum. Writes ``benchmarks/results/batched_lco.json``.

With ``--device cuda`` (only where an accelerator is lent: benchmarks.md, "GPU") the script
also times the same batched training on this machine's CPU, and a heavier load (p = 40: 822
models on 4000 rows) on both, and writes ``batched_lco_gpu.json``.

Usage: ``python benchmarks/batched_training.py [--repeats 3] [--device cpu|cuda|auto]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from quality import RESULTS, load_dataset
from sklearn.linear_model import LogisticRegression

from ecoval_ops.valuation import SoftmaxRegression
from ecoval_ops.valuation.clustering import FeatureSpace, KMeansClusterer
from ecoval_ops.valuation.plan import stratified_half
from ecoval_ops.valuation.utility import per_example_utility


def _data(n_train: int, n_val: int, seed: int) -> tuple[np.ndarray, ...]:
    X, y = load_dataset("mnist_5k")
    order = np.random.default_rng(seed).permutation(y.size)
    X = X - X[order[:n_train]].mean(axis=0)
    _, _, vt = np.linalg.svd(X[order[:n_train]], full_matrices=False)
    Z = X @ vt[:64].T
    tr, va = order[:n_train], order[n_train : n_train + n_val]
    return Z[tr], y[tr], Z[va], y[va]


def _masks(Z: np.ndarray, p: int, seed: int) -> np.ndarray:
    """The 2 + p + p(p-1)/2 masks of an EcoVal run on k-means clusters of ``Z``."""
    clusters = KMeansClusterer().fit_predict(FeatureSpace.fit(Z, max_dims=64).cluster_space(Z), p, seed)
    masks = [np.ones(Z.shape[0], dtype=bool), stratified_half(clusters, np.random.default_rng(seed))]
    masks += [clusters != c for c in range(p)]
    masks += [(clusters != c) & (clusters != d) for c in range(p) for d in range(c + 1, p)]
    return np.stack(masks)


def _time(train: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, proba = [], np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        proba = train()
        times.append(time.perf_counter() - start)
    return statistics.median(times), proba


def _cold(X: np.ndarray, y: np.ndarray, masks: np.ndarray, Xv: np.ndarray, device: str) -> np.ndarray:
    learner = SoftmaxRegression(device=device)
    return np.concatenate(
        [learner.predict_proba_masked(X[m], y[m], np.ones((1, m.sum()), bool), Xv, n_classes=10, seed=0) for m in masks]
    )


def _sklearn(X: np.ndarray, y: np.ndarray, masks: np.ndarray, Xv: np.ndarray) -> np.ndarray:
    return np.stack([LogisticRegression(C=1.0, max_iter=1000).fit(X[m], y[m]).predict_proba(Xv) for m in masks])


def _gpu_against_cpu(
    Xs: np.ndarray, y: np.ndarray, masks: np.ndarray, Xvs: np.ndarray, repeats: int
) -> dict[str, object]:
    """The batched training on the CPU of the same machine, and a heavier load on both devices."""
    import torch

    def batched(
        device: str, X: np.ndarray, labels: np.ndarray, ms: np.ndarray, Xv: np.ndarray
    ) -> Callable[[], np.ndarray]:
        return lambda: SoftmaxRegression(device=device).predict_proba_masked(X, labels, ms, Xv, n_classes=10, seed=0)

    cpu_seconds, _ = _time(batched("cpu", Xs, y, masks, Xvs), repeats)
    X4, y4, Xv4, _ = _data(4000, 500, seed=1)
    heavy = _masks(X4, 40, seed=1)
    space = FeatureSpace.fit(X4, max_dims=None)
    heavy_seconds = {
        device: _time(batched(device, space.standardise(X4), y4, heavy, space.standardise(Xv4)), repeats)[0]
        for device in ("cuda", "cpu")
    }
    return {
        "gpu": torch.cuda.get_device_name(0),
        "cpu_seconds_batched": cpu_seconds,
        "heavy": {"models": int(heavy.shape[0]), "n_train": 4000, "seconds": heavy_seconds},
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / ("batched_lco_gpu.json" if args.device == "cuda" else "batched_lco.json")
    X, y, Xv, yv = _data(2000, 500, seed=0)
    masks = _masks(X, 12, seed=0)
    Xs = FeatureSpace.fit(X, max_dims=None).standardise(X)
    Xvs = FeatureSpace.fit(X, max_dims=None).standardise(Xv)
    SoftmaxRegression(device=args.device).predict_proba_masked(Xs, y, masks[:2], Xvs, n_classes=10, seed=0)
    timings = {
        "batched": lambda: SoftmaxRegression(device=args.device).predict_proba_masked(
            Xs, y, masks, Xvs, n_classes=10, seed=0
        ),
        "one_by_one_warm": lambda: SoftmaxRegression(device=args.device, one_by_one=True).predict_proba_masked(
            Xs, y, masks, Xvs, n_classes=10, seed=0
        ),
        "one_by_one_cold": lambda: _cold(Xs, y, masks, Xvs, args.device),
        "sklearn": lambda: _sklearn(Xs, y, masks, Xvs),
    }
    seconds, proba = {}, {}
    for name, train in timings.items():
        seconds[name], proba[name] = _time(train, args.repeats)
    u = {name: per_example_utility(p, yv, "log_likelihood").mean(axis=1) for name, p in proba.items()}
    lco = {name: v[0] - v[2:] for name, v in u.items()}
    result = {
        "protocol": "batched_lco",
        "dataset": "mnist_5k (pixels/255, PCA 64)",
        "n_train": int(X.shape[0]),
        "n_val": int(Xv.shape[0]),
        "models": int(masks.shape[0]),
        "device": args.device,
        "repeats": args.repeats,
        "seconds": seconds,
        "ratio_to_batched": {name: s / seconds["batched"] for name, s in seconds.items() if name != "batched"},
        "max_abs_lco_gap_to_batched": {
            name: float(np.max(np.abs(v - lco["batched"]))) for name, v in lco.items() if name != "batched"
        },
        "machine": platform.platform(),
    }
    if args.device == "cuda":
        result |= _gpu_against_cpu(Xs, y, masks, Xvs, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
