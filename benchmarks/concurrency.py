"""Two valuations on one host at once: EcoVal's ``threads`` (ecoval_ops/valuation/threads.py).

Airflow's shard tasks side by side on one worker, or two teams' runs, each start BLAS, OpenMP and
torch with a thread per core. Each case (a protocol's seed-0 split and a learner) is valued alone
and then two at a time, each valuation in a fresh process that times its own fit (imports
excluded), with ``threads`` left at None (every core) and at 1. The values of a pair are checked
equal to the lone run's.

Writes ``results/concurrency.json``.

Usage: ``python benchmarks/concurrency.py [--cases P1:logistic D1:logistic P1:trees] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from quality import PROTOCOLS, RESULTS, make_split

THREADS = (None, 1)
"""The settings compared: every core, and one thread per valuation."""


def one(protocol: str, learner: str, threads: int | None) -> dict[str, float]:
    """Fit EcoVal on ``protocol``'s seed-0 split in this process; its wall time and the values' sum."""
    from ecoval_ops.valuation import EcoVal

    split = make_split(PROTOCOLS[protocol], 0)
    start = time.perf_counter()
    est = EcoVal(seed=0, learner=learner, threads=threads).fit(split.X_train, split.y_train, split.X_val, split.y_val)
    return {"wall_s": time.perf_counter() - start, "value_sum": float(est.values_.sum())}


def _start(case: str, threads: int | None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--one", case, str(threads)], stdout=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"a valuation failed with exit {process.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def measure(case: str, threads: int | None) -> dict[str, object]:
    """The lone run of ``case`` (``protocol:learner``), then a pair started together."""
    alone = _finish(_start(case, threads))
    pair = [_finish(p) for p in [_start(case, threads), _start(case, threads)]]
    if any(abs(p["value_sum"] - alone["value_sum"]) > 1e-9 for p in pair):
        raise RuntimeError(f"{case}, threads {threads}: a pair's values differ from the lone run's")
    return {
        "case": case,
        "threads": threads,
        "alone_s": alone["wall_s"],
        "pair_s": [p["wall_s"] for p in pair],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["P1:logistic", "D1:logistic", "P1:trees"])
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.one:
        case, threads = args.one
        protocol, learner = case.split(":")
        print(json.dumps(one(protocol, learner, None if threads == "None" else int(threads))))
        return
    runs = []
    for case in args.cases:
        for threads in THREADS:
            runs.append(measure(case, threads))
            print(json.dumps(runs[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    found = {"cores": os.cpu_count(), "runs": runs}
    (args.out / "concurrency.json").write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
