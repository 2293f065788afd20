"""Nightly load (issue 6): a table growing by ``--batch`` rows a night, valued incrementally.

Night 1 writes the first batch and runs a full valuation (refit); every later night appends a
batch and runs ``ecoval run --refit never`` (the new rows valued out of sample against the
registered model). Each night runs in a fresh process, so its peak RSS is its own. Writes
``benchmarks/results/load.json``: per night the table's rows, the rows valued, each stage's
wall time and peak RSS, and the night's end-to-end wall time.

Usage: ``python benchmarks/load.py [--nights 10] [--batch 100000] [--engine delta-rs|spark]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import RESULTS, _peak_mb, embedding_config, embedding_rows


def night(workdir: Path, index: int, batch: int, engine: str) -> dict[str, object]:
    from deltalake import write_deltalake

    from ecoval_ops.pipeline import run_valuation

    path = workdir / "train"
    offset = index * batch
    write_deltalake(str(path), embedding_rows(offset, batch), mode="append", schema_mode="merge")
    cfg = embedding_config(path, workdir, engine=engine, refit="auto" if index == 0 else "never")
    start = time.perf_counter()
    summary = run_valuation(cfg)
    return {
        "night": index + 1,
        "table_rows": offset + batch,
        "mode": summary.mode,
        "rows_valued": summary.rows_valued,
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": _peak_mb(),
        "stages": {
            stage: {"wall_s": s, "peak_rss_mb": summary.stage_peak_rss_mb[stage]}
            for stage, s in summary.stage_seconds.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoVal nightly load")
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--engine", choices=["delta-rs", "spark"], default="delta-rs")
    parser.add_argument("--one", nargs=2, metavar=("WORKDIR", "NIGHT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(night(Path(args.one[0]), int(args.one[1]), args.batch, args.engine)))
        return
    results: dict[str, object] = {"batch": args.batch, "engine": args.engine, "nights": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.nights):
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    tmp,
                    str(index),
                    "--batch",
                    str(args.batch),
                    "--engine",
                    args.engine,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"night {index + 1} failed: {done.stderr.strip().splitlines()[-1:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            results["nights"].append(figures)  # type: ignore[attr-defined]
            print(json.dumps(figures), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
