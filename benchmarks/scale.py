"""Scale curve (benchmarks.md, "Cost and scale protocols").

Synthetic labelled embeddings: a Gaussian mixture, d = 64, 10 classes, 5% label noise. For each
n, in a fresh process so that peak memory is that stage's own:

- ``incore``: ``EcoVal().fit`` on n rows (wall time, peak RSS) and the out-of-sample scoring
  rate of 100,000 new rows (rows per second);
- ``spark``: a Delta table of n rows with a 64-d embedding column, valued end to end by
  ``run_valuation`` on the embedded Spark engine (embed, decide, cluster = the reference draw,
  train, fit = production function, first row pass and registration, value = second row pass,
  write = the Delta MERGE), each stage's wall time and the Python driver's peak RSS after it;
  ``end_to_end`` adds the driver JVM's peak RSS (``VmHWM``; local mode runs the executors in
  it) and its heap setting; ``night`` appends n/10 rows and values them incrementally (its
  peak RSS is the process's, so at least the refit's);
- ``reference``: n rows with 10% flipped labels, noise-detection AUROC and the values'
  Spearman correlation with every row as reference, for reference sets of 12k rows (at 60k) or
  5, 10 and 20% of the rows;
- ``search``: the neighbour search (``neighbour_search``) on n reference rows (200,000: the
  members per cluster of a million-row fit, about 17,000), ``exact`` against ``approx``, on the
  mixture and on the reference sweep's overlapping classes with 10% flips: fit time, the
  out-of-sample rate of 100,000 new rows, recall@k, detection AUROC and the values' Spearman
  correlation with the exact search's.

Writes ``benchmarks/results/scale.json``: ``{mode: {n: {stage: {"wall_s", "peak_rss_mb", ...}}}}``.

Usage: ``python benchmarks/scale.py [--incore 10000 100000 1000000] [--spark 100000 1000000]
[--reference 60000 1000000] [--search 200000]``
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
NIGHT_SHARE = 10
"""A night appends one row per this many rows of the table (valued incrementally)."""


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X, y, _ = _noisy(n, seed, 0.05)
    return X, y


def _noisy(
    n: int, seed: int, noise: float, *, classes: int = 10, spread: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` rows of the mixture with a share ``noise`` of labels flipped; the flipped rows' mask."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(scale=spread, size=(classes, 64))
    y = rng.integers(0, classes, size=n)
    X = centres[y] + rng.normal(size=(n, 64))
    flip = rng.random(n) < noise
    return X, np.where(flip, (y + rng.integers(1, classes, size=n)) % classes, y), flip


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
    fit = {"wall_s": time.perf_counter() - start, "peak_rss_mb": _peak_mb(), **ev.model_.figures()}
    return {"fit": fit, "oos_100k": _scoring(ev, *_data(100_000, seed=2))}


def _scoring(ev: object, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The out-of-sample rate of rows ``(X, y)``, and the values (not kept in the results)."""
    start = time.perf_counter()
    ev.value(X, y)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    return {"wall_s": seconds, "peak_rss_mb": _peak_mb(), "rows_per_s": X.shape[0] / seconds}


def neighbour_search(n: int) -> dict[str, dict[str, float]]:
    """``exact`` against ``approx`` on n reference rows of the mixture and of the sweep's data."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from ecoval_ops.valuation import EcoVal

    out: dict[str, dict[str, float]] = {}
    for data, (X, y, flip) in (("mixture", _noisy(n, 0, 0.05)), ("overlap", _noisy(n, 0, 0.1, classes=4, spread=0.35))):
        Xv, yv, _ = _noisy(5000, 1, 0.0) if data == "mixture" else _noisy(5000, 1, 0.0, classes=4, spread=0.35)
        Xn, yn, _ = _noisy(100_000, 2, 0.05) if data == "mixture" else _noisy(100_000, 2, 0.1, classes=4, spread=0.35)
        exact = None
        for search in ("exact", "approx"):
            start = time.perf_counter()
            ev = EcoVal(max_reference_rows=n, neighbour_search=search).fit(X, y, Xv, yv)
            figures = {"fit_s": time.perf_counter() - start, "auroc": float(roc_auc_score(flip, -ev.values_))}
            figures.update({k: v for k, v in ev.model_.figures().items() if k != "kappa"})
            figures["oos_rows_per_s"] = _scoring(ev, Xn, yn)["rows_per_s"]
            if exact is None:
                exact = ev.values_
            else:
                figures["spearman_with_exact"] = float(spearmanr(ev.values_, exact).statistic)
            out[f"{data}_{search}"] = figures
            print(data, search, json.dumps(figures), file=sys.stderr, flush=True)
    return out


def reference_agreement(n: int, references: list[int]) -> dict[str, dict[str, float]]:
    """Noise detection with reference sets of ``references`` rows against every row as reference.

    ``n`` rows of 4 overlapping classes with 10% flipped labels (the separated 10-class mixture
    of the scale curve makes every flip obvious: AUROC 1.0 at any reference size); for each
    size: AUROC of ``-v`` for the flipped rows, the values' Spearman correlation with the full
    computation's, fit time and peak RSS.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from ecoval_ops.valuation import EcoVal

    X, y, flip = _noisy(n, 0, 0.1, classes=4, spread=0.35)
    Xv, yv, _ = _noisy(5000, 1, 0.0, classes=4, spread=0.35)
    out: dict[str, dict[str, float]] = {}
    full = None
    for size in [n, *references]:
        start = time.perf_counter()
        ev = EcoVal(max_reference_rows=size).fit(X, y, Xv, yv)
        figures = {
            "wall_s": time.perf_counter() - start,
            "peak_rss_mb": _peak_mb(),
            "auroc": float(roc_auc_score(flip, -ev.values_)),
        }
        if full is None:
            full = ev.values_
        else:
            figures["spearman_with_full"] = float(spearmanr(ev.values_, full).statistic)
        out["full" if size == n else str(size)] = figures
        print(size, json.dumps(figures), file=sys.stderr, flush=True)
    return out


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


def _jvm_figures(session: object) -> dict[str, float]:
    """Peak RSS of the driver's JVM (``VmHWM``; executors run in it in local mode) and its heap setting."""
    gateway = session.sparkContext._gateway  # type: ignore[attr-defined]
    status = Path(f"/proc/{gateway.proc.pid}/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    conf = session.sparkContext.getConf()  # type: ignore[attr-defined]
    return {"jvm_peak_rss_mb": peak_kb / 1024.0, "jvm_heap": conf.get("spark.driver.memory", "1g")}


def _append(path: Path, offset: int, n: int) -> None:
    """Append rows ``offset..offset+n`` of :func:`embedding_rows` in chunks (the peak is not the generator's)."""
    from deltalake import write_deltalake

    for start in range(offset, offset + n, 250_000):
        rows = embedding_rows(start, min(250_000, offset + n - start))
        write_deltalake(str(path), rows, mode="append", schema_mode="merge")


def spark(n: int) -> dict[str, dict[str, float]]:
    from ecoval_ops.pipeline import SparkEngine, run_valuation

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings"
        start = time.perf_counter()
        _append(path, 0, n)
        setup, setup_peak = time.perf_counter() - start, _peak_mb()
        cfg = embedding_config(path, Path(tmp), engine="spark")
        engine = SparkEngine()
        start = time.perf_counter()
        summary = run_valuation(cfg, engine)
        total = time.perf_counter() - start
        jvm = _jvm_figures(engine.spark)
        refit_peak = _peak_mb()
        _append(path, n, n // NIGHT_SHARE)
        start = time.perf_counter()
        night = run_valuation(cfg, engine)
        night_total = time.perf_counter() - start
    out = {
        stage: {"wall_s": s, "peak_rss_mb": summary.stage_peak_rss_mb[stage]}
        for stage, s in summary.stage_seconds.items()
    }
    out["end_to_end"] = {"wall_s": total, "peak_rss_mb": refit_peak, "rows_valued": summary.rows_valued, **jvm}
    out["night"] = {
        "wall_s": night_total,
        "peak_rss_mb": _peak_mb(),
        "mode": night.mode,
        "rows_valued": night.rows_valued,
        "stages_s": night.stage_seconds,
    }
    out["table_setup"] = {"wall_s": setup, "peak_rss_mb": setup_peak}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoVal scale curve")
    parser.add_argument("--incore", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--spark", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument(
        "--reference",
        nargs="*",
        type=int,
        default=[],
        help="table sizes of the reference sweep (60000: 12k; otherwise 5, 10 and 20%% of the rows)",
    )
    parser.add_argument("--search", nargs="*", type=int, default=[], help="reference rows of the search comparison")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    if args.one:
        mode, n = args.one[0], int(args.one[1])
        modes = {"incore": incore, "spark": spark, "reference": _sweep, "search": neighbour_search}
        print(json.dumps(modes[mode](n)))
        return
    # Sizes not rerun keep their earlier figures.
    results: dict[str, dict[str, object]] = {"incore": {}, "spark": {}, "reference": {}, "search": {}}
    if args.out.exists():
        results.update(json.loads(args.out.read_text()))
    runs = (("incore", args.incore), ("spark", args.spark), ("reference", args.reference), ("search", args.search))
    for mode, sizes in runs:
        for n in sizes:
            done = subprocess.run([sys.executable, __file__, "--one", mode, str(n)], capture_output=True, text=True)
            if done.returncode != 0:
                results[mode][str(n)] = {"error": done.stderr.strip().splitlines()[-1:]}
            else:
                results[mode][str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(mode, n, json.dumps(results[mode][str(n)]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")


def _sweep(n: int) -> dict[str, dict[str, float]]:
    sizes = [12_000] if n == 60_000 else [n * share // 100 for share in (5, 10, 20)]
    return reference_agreement(n, sizes)


if __name__ == "__main__":
    main()
