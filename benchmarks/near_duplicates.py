"""The reference set on near-duplicates (issue 24, item 6).

A real table (pol, 2dplanes or credit from ``shared/datasets``) becomes three jittered copies of
each row (Gaussian noise of ``JITTER`` times each feature's standard deviation), 10% of the rows'
labels flipped at random, every row keyed by its copy group; validation is 2,000 clean held-out
rows. For each way to choose the reference set, the noise-detection AUROC of ``-v`` overall, on
members and on non-members, the share of flipped rows with a clean twin among the members, and
the fit's wall time:

- ``full``: every row is a member (``max_reference_rows = n``);
- ``rows_<share>``: the default draw, one draw per row, at 20% and 50% of the rows;
- ``groups_20``: one draw per copy group, so near-duplicates are members together or not at all.

Results are kept per dataset (``--dataset`` takes several).

Writes ``benchmarks/results/near_duplicates.json``. Usage:
``python benchmarks/near_duplicates.py [--dataset pol_722] [--copies 3]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
JITTER = 0.05
FLIP = 0.10
VALIDATION_ROWS = 2_000


def near_duplicate_table(
    name: str, copies: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``X, y, flipped, group`` of the jittered copies, then the clean validation ``X_val, y_val``."""
    data = np.load(DATASETS / f"{name}.npz", allow_pickle=False)
    X0, y0 = data["X"].astype(np.float64), data["y"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y0))
    val, train = order[:VALIDATION_ROWS], order[VALIDATION_ROWS:]
    scale = X0[train].std(axis=0)
    group = np.repeat(np.arange(train.size), copies)
    X = X0[train][group] + rng.normal(size=(group.size, X0.shape[1])) * JITTER * scale
    y = y0[train][group]
    classes = np.unique(y0)
    flipped = rng.random(group.size) < FLIP
    shift = rng.integers(1, classes.size, size=group.size)
    y = np.where(flipped, classes[(np.searchsorted(classes, y) + shift) % classes.size], y)
    return X, y, flipped, group, X0[val], y0[val]


def detection(
    X: np.ndarray, y: np.ndarray, flipped: np.ndarray, group: np.ndarray, Xv: np.ndarray, yv: np.ndarray,
    reference_rows: int, draws: np.ndarray | None,
) -> dict[str, float]:  # fmt: skip
    """AUROC of ``-v`` for the flipped rows (all, members, non-members), twin coverage and fit time."""
    from sklearn.metrics import roc_auc_score

    from ecoval_ops.valuation import EcoVal

    start = time.perf_counter()
    ev = EcoVal(max_reference_rows=reference_rows).fit(X, y, Xv, yv, draws=draws)
    seconds = time.perf_counter() - start
    member = np.zeros(y.size, dtype=bool)
    member[ev.members_] = True
    clean_member_groups = np.unique(group[member & ~flipped])
    figures = {
        "wall_s": seconds,
        "members": int(member.sum()),
        "auroc": float(roc_auc_score(flipped, -ev.values_)),
        "flipped_with_a_clean_member_twin": float(np.isin(group[flipped], clean_member_groups).mean()),
    }
    for name, rows in (("members", member), ("non_members", ~member)):
        if flipped[rows].any() and (~flipped[rows]).any():
            figures[f"auroc_{name}"] = float(roc_auc_score(flipped[rows], -ev.values_[rows]))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoVal's reference set on near-duplicates")
    parser.add_argument("--dataset", nargs="+", default=["pol_722", "default-of-credit-card-clients_42477"])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "near_duplicates.json")
    args = parser.parse_args(argv)
    out: dict[str, object] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for dataset in args.dataset:
        out[dataset] = _runs(dataset, args.copies)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


def _runs(dataset: str, copies: int) -> dict[str, object]:
    from ecoval_ops.valuation.reference import seeded_draws

    X, y, flipped, group, Xv, yv = near_duplicate_table(dataset, copies)
    n = y.size
    # One draw per group in the high bits, the copy in the low bits: draws stay distinct (they
    # identify members) and a group's copies fall on the same side of a stratum's threshold.
    bits = max(1, (copies - 1).bit_length())
    group_draws = (seeded_draws(int(group.max()) + 1, 7)[group] >> bits << bits) | np.arange(n) % copies
    runs = {
        "full": (n, None),
        "rows_20": (n // 5, None),
        "rows_50": (n // 2, None),
        "groups_20": (n // 5, group_draws),
    }
    out: dict[str, object] = {"rows": n, "copies": copies, "jitter": JITTER}
    for name, (reference_rows, draws) in runs.items():
        out[name] = detection(X, y, flipped, group, Xv, yv, reference_rows, draws)
        print(dataset, name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    main()
