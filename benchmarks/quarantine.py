"""Quarantine preview calibration (issue 29): expected wrong labels per cut against the injected flips.

For each protocol and seed, EcoVal values the noisy training split; for each cut of the preview
(the lowest 1-30% by value, and the suspect flag) the expected number of wrong labels, the sum of
``P(wrong_i) = (1 - alpha_i) / 2`` over the cut's rows (:mod:`ecoval_ops.valuation.quarantine`),
is set beside the number of flipped rows the cut actually holds. Reported per cut: both sums over
the seeds and their ratio (1 is calibrated; the bar is within 10% on D1, M1 and P1).

Writes ``results/quarantine.json``.

Usage: ``python benchmarks/quarantine.py [--protocols D1 M1 P1] [--seeds 0 1 2 3 4] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from quality import PROTOCOLS, RESULTS, SEEDS, ecoval, make_split

from ecoval_ops.valuation.quarantine import NO_CUT, SUSPECT_CUT, preview

DEFAULT_PROTOCOLS = ["D1", "M1", "P1", "P3", "X1-cpu", "X1-phoneme", "X1-credit"]


def calibration(protocol: str, seeds: list[int]) -> dict[str, dict[str, float]]:
    """Per cut: rows removed, expected and actual wrong labels summed over ``seeds``, and their ratio."""
    totals: dict[str, dict[str, float]] = {}
    for seed in seeds:
        split = make_split(PROTOCOLS[protocol], seed)
        result = ecoval(split, seed)
        order = np.argsort(result.values, kind="stable")
        cuts = [c for c in preview(result.values, np.asarray(result.intrinsic), result.suspect) if c.cut != NO_CUT]
        for cut in cuts:
            rows = result.suspect if cut.cut == SUSPECT_CUT else order[: cut.rows_removed]
            entry = totals.setdefault(cut.cut, {"rows_removed": 0, "expected": 0.0, "actual": 0})
            entry["rows_removed"] += cut.rows_removed
            entry["expected"] += cut.expected_wrong_labels
            entry["actual"] += int(split.is_noisy[rows].sum())
    for entry in totals.values():
        entry["ratio"] = entry["expected"] / max(entry["actual"], 1)
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=DEFAULT_PROTOCOLS, choices=list(PROTOCOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    out = {"seeds": args.seeds, "protocols": {p: calibration(p, args.seeds) for p in args.protocols}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quarantine.json").write_text(json.dumps(out, indent=2))
    for name, cuts in out["protocols"].items():
        print(name, " ".join(f"{c} {v['ratio']:.2f}" for c, v in cuts.items()))


if __name__ == "__main__":
    main()
