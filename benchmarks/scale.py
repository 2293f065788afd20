"""Scale curve (benchmarks.md, "Cost and scale protocols").

Synthetic labelled embeddings: a Gaussian mixture, d = 64, 10 classes, 5% label noise. For each
n, in a fresh process so that peak memory is that stage's own:

- ``incore``: ``EcoVal().fit`` on n rows (wall time, peak RSS) and the out-of-sample scoring
  rate of 100,000 new rows (rows per second);
- ``spark``: a Delta table of n rows with a 64-d embedding column, valued end to end by
  ``run_valuation`` on the embedded Spark engine (embed, decide, cluster, train, fit = production
  function and registration, value = propagation, write = the Delta MERGE), each stage's wall
  time and the Python process's peak RSS after it (the JVM's memory is not included).

Writes ``benchmarks/results/scale.json``: ``{mode: {n: {stage: {"wall_s", "peak_rss_mb"}}}}``.

Usage: ``python benchmarks/scale.py [--incore 10000 100000 1000000] [--spark 100000 1000000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.config import RunConfig

RESULTS = Path(__file__).resolve().parent / "results"


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(scale=2.0, size=(10, 64))
    y = rng.integers(0, 10, size=n)
    X = centres[y] + rng.normal(size=(n, 64))
    flip = rng.random(n) < 0.05
    return X, np.where(flip, (y + rng.integers(1, 10, size=n)) % 10, y)


def embedding_rows(offset: int, n: int) -> pa.Table:
    """Rows ``offset..offset+n`` of a table ``id, emb`` (64-d float32), ``label`` (seeded by offset)."""
    import pyarrow as pa

    X, y = _data(n, seed=offset)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), 64)
    return pa.table({"id": np.arange(offset, offset + n), "emb": emb, "label": y})


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def incore(n: int) -> dict[str, dict[str, float]]:
    from ecoval_ops.valuation import EcoVal

    X, y = _data(n, seed=0)
    Xv, yv = _data(2000, seed=1)
    start = time.perf_counter()
    ev = EcoVal().fit(X, y, Xv, yv)
    fit = {"wall_s": time.perf_counter() - start, "peak_rss_mb": _peak_mb()}
    Xn, yn = _data(100_000, seed=2)
    start = time.perf_counter()
    ev.value(Xn, yn)
    seconds = time.perf_counter() - start
    return {
        "fit": fit,
        "oos_100k": {"wall_s": seconds, "peak_rss_mb": _peak_mb(), "rows_per_s": 100_000 / seconds},
    }


def embedding_config(path: Path, store: Path, **flags: object) -> RunConfig:
    """The run configuration of a table of :func:`embedding_rows`, MLflow in ``store/mlflow.db``."""
    from ecoval_ops.config import load_config

    return load_config(
        None,
        table=str(path),
        key="id",
        label="label",
        embedding_col="emb",
        mlflow_uri=f"sqlite:///{store}/mlflow.db",
        quiet=True,
        **flags,
    )


def spark(n: int) -> dict[str, dict[str, float]]:
    from deltalake import write_deltalake

    from ecoval_ops.pipeline import SparkEngine, run_valuation

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings"
        start = time.perf_counter()
        for offset in range(0, n, 250_000):
            write_deltalake(str(path), embedding_rows(offset, min(250_000, n - offset)), mode="append")
        setup = time.perf_counter() - start
        cfg = embedding_config(path, Path(tmp), engine="spark")
        start = time.perf_counter()
        summary = run_valuation(cfg, SparkEngine())
        total = time.perf_counter() - start
    out = {
        stage: {"wall_s": s, "peak_rss_mb": summary.stage_peak_rss_mb[stage]}
        for stage, s in summary.stage_seconds.items()
    }
    out["end_to_end"] = {"wall_s": total, "peak_rss_mb": _peak_mb(), "rows_valued": summary.rows_valued}
    out["table_setup"] = {"wall_s": setup, "peak_rss_mb": _peak_mb()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoVal scale curve")
    parser.add_argument("--incore", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--spark", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    if args.one:
        mode, n = args.one[0], int(args.one[1])
        print(json.dumps({"incore": incore, "spark": spark}[mode](n)))
        return
    # Sizes not rerun keep their earlier figures.
    results: dict[str, dict[str, object]] = {"incore": {}, "spark": {}}
    if args.out.exists():
        results.update(json.loads(args.out.read_text()))
    for mode, sizes in (("incore", args.incore), ("spark", args.spark)):
        for n in sizes:
            done = subprocess.run([sys.executable, __file__, "--one", mode, str(n)], capture_output=True, text=True)
            if done.returncode != 0:
                results[mode][str(n)] = {"error": done.stderr.strip().splitlines()[-1:]}
            else:
                results[mode][str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(mode, n, json.dumps(results[mode][str(n)]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
