"""Out-of-sample protocol (benchmarks.md): valuing rows that were never clustered or trained on.

EcoVal is fitted on the training split of a protocol; a pool of 1000 further rows, noisy at the
protocol's rate, is valued against the fitted state (spec section 5, no retraining). Reported per
seed: noise AUROC and F1 on the pool, and the test accuracy of logistic regression trained on
the training split plus the top-valued half of the pool, against the split plus a random half.

Writes ``results/OOS.json``.

Usage: ``python benchmarks/oos.py [--protocols P1 P3 X1-cpu] [--seeds 0 1 2 3 4] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from quality import PROTOCOLS, RESULTS, SEEDS, auroc, f1, make_split

from ecoval_ops.valuation import EcoVal, FeatureSpace, SoftmaxRegression

POOL = 1000


def _accuracy_with(split, rows: list[np.ndarray], seed: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Test accuracy of logistic regression on the training split plus each set of pool rows."""
    X = np.vstack([split.X_train, split.X_pool])
    y = np.concatenate([split.y_train, split.y_pool])
    n = split.y_train.size
    masks = np.zeros((len(rows), y.size), dtype=bool)
    masks[:, :n] = True
    for m, chosen in enumerate(rows):
        masks[m, n + chosen] = True
    space = FeatureSpace.fit(split.X_train, max_dims=None)
    proba = SoftmaxRegression(device="cpu").predict_proba_masked(
        space.standardise(X), y, masks, space.standardise(split.X_test), n_classes=int(y.max()) + 1, seed=seed
    )
    return (proba.argmax(axis=2) == split.y_test[None, :]).mean(axis=1).tolist()


def run(name: str, seeds: list[int]) -> dict[str, object]:
    """The OOS figures of one protocol over ``seeds``."""
    record: dict[str, list[float]] = {
        "auroc": [],
        "f1": [],
        "acc_top_half": [],
        "acc_random_half": [],
        "rows_per_s": [],
    }
    for seed in seeds:
        s = make_split(PROTOCOLS[name], seed, pool=POOL)
        ev = EcoVal(seed=seed).fit(s.X_train, s.y_train, s.X_val, s.y_val)
        start = time.perf_counter()
        values = ev.value(s.X_pool, s.y_pool)
        record["rows_per_s"].append(POOL / (time.perf_counter() - start))
        truth = np.zeros(POOL, dtype=bool)
        truth[s.pool_noisy] = True
        record["auroc"].append(auroc(values, truth))
        record["f1"].append(f1(values, truth))
        top = np.argsort(-values, kind="stable")[: POOL // 2]
        random_half = np.random.default_rng(seed + 20_000).permutation(POOL)[: POOL // 2]
        top_acc, random_acc = _accuracy_with(s, [top, random_half], seed)
        record["acc_top_half"].append(top_acc)
        record["acc_random_half"].append(random_acc)
    return {"protocol": name, "dataset": PROTOCOLS[name].dataset, "pool": POOL, **record}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=["P1", "P3", "X1-cpu"], choices=list(PROTOCOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = {"protocol": "OOS", "seeds": args.seeds, "runs": [run(name, args.seeds) for name in args.protocols]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "OOS.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in result["runs"]:  # type: ignore[attr-defined]
        print(
            f"{r['protocol']}: pool auroc {np.mean(r['auroc']):.3f} f1 {np.mean(r['f1']):.3f} "
            f"acc +top half {np.mean(r['acc_top_half']):.3f} vs +random half {np.mean(r['acc_random_half']):.3f}"
        )


if __name__ == "__main__":
    main()
