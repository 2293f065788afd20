"""A run on a table in S3 beside the same run on local disk (issue 25).

The same table (``--rows`` rows of 64-d embeddings, keyed by integers) is written to a local
folder and to a bucket of a real S3 API server (s3proxy 4.1.0 on loopback, its buckets on the same
disk, so the figures show the protocol's cost, not a network's), then valued by ``ecoval run``
from a shell on each engine: a refit, then a night of 10% new rows. Each run's workspace lies
beside its table (in the bucket for the S3 runs). Wall seconds per run.

Writes ``benchmarks/results/object_store.json``. Usage:
``python benchmarks/object_store.py [--rows 20000] [--engine delta-rs spark]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from scale import embedding_rows  # noqa: E402

from tests.s3 import running_s3  # noqa: E402


def _run(table: str, engine: str, home: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ecoval_ops.cli", "run", "--engine", engine, "--table", table, "--key", "id",
         "--label", "label", "--embedding-col", "emb", "--quiet"],
        cwd=home, env=env, check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def measure(rows: int, engines: list[str]) -> dict[str, dict[str, float]]:
    """Seconds of a refit and a night per engine and place."""
    from deltalake import write_deltalake

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ecoval-object-store-") as tmp, running_s3(Path(tmp) / "s3") as s3:
        env = {**os.environ, **s3.env()}
        for engine in engines:
            for place in ("local", "s3"):
                home = Path(tmp) / f"{engine}_{place}"
                home.mkdir()
                table = str(home / "train") if place == "local" else f"{s3.bucket(f'{engine}-bench')}/train"
                options = None if place == "local" else s3.env()
                write_deltalake(table, embedding_rows(0, rows), storage_options=options)
                refit = _run(table, engine, home, env)
                write_deltalake(table, embedding_rows(rows, rows // 10), mode="append", schema_mode="merge",
                                storage_options=options)  # fmt: skip
                night = _run(table, engine, home, env)
                out[f"{engine}/{place}"] = {"refit_s": round(refit, 1), "night_s": round(night, 1)}
                print(engine, place, out[f"{engine}/{place}"], flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--engine", nargs="+", default=["delta-rs", "spark"])
    args = parser.parse_args(argv)
    result = {"rows": args.rows, "dims": 64, "night_rows": args.rows // 10, "runs": measure(args.rows, args.engine)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "object_store.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
