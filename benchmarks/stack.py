"""Both engines under a real Airflow scheduler (issue 14, defect c).

Starts the native stack of the tests (``tests/stack/services.py``: Postgres, Redis, Spark
standalone master and worker, MLflow on Postgres, Airflow with the LocalExecutor), values a
1,500-row Delta table with ``ecoval_nightly`` once per engine (``--engine spark`` against the
standalone master, unsized and sized by the run's ``spark_*`` settings, and attached to the
stack's Spark Connect server, which the stack starts on the master), and records the run's
wall time and each task's duration, with the stack's start-up times and memory.

Writes ``benchmarks/results/stack.json``: ``{"startup": {...}, "runs": {variant: {"engine",
"sizing", "state", "wall_s", "tasks": {task: seconds}}}}``.

Usage: ``python benchmarks/stack.py [--rows 1500] [--out results/stack.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
# Spark unsized (every core of the cluster, a 1g driver) and sized as a deployment would size a task.
VARIANTS = (
    ("delta_rs", "delta-rs", {}),
    ("spark", "spark", {}),
    ("spark_sized", "spark", {"spark_cores": 1, "spark_driver_memory": "1g", "spark_executor_memory": "512m"}),
    # Every Spark step attached to the stack's `ecoval spark-connect` server (issue 26).
    ("spark_connect", "spark", {"spark_conn_id": "spark_connect_default"}),
)


def _durations(stack, run_id: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for ti in stack.task_instances("ecoval_nightly", run_id):
        if ti["start_date"] and ti["end_date"]:
            name = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
            span = datetime.fromisoformat(ti["end_date"]) - datetime.fromisoformat(ti["start_date"])
            out[name] = round(span.total_seconds(), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=RESULTS / "stack.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    from tests.conftest import blobs
    from tests.stack.services import missing_services, running_stack, spark_connect_server

    if reason := missing_services():
        raise SystemExit(reason)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="ecoval-bench-stack-") as home, running_stack(Path(home)) as stack:
        for name, engine, sizing in VARIANTS:
            table = stack.lakehouse / f"bench_{name}"
            X, y = blobs(args.rows, n_classes=3, d=3, noise=0.1, seed=1)
            rows = {"row_id": np.arange(args.rows), **{f"f{j}": X[:, j] for j in range(3)}, "label": y}
            write_deltalake(str(table), pa.table(rows))
            conf = {"table": str(table), "key": "row_id", "label": "label", "features": "f0,f1,f2",
                    "engine": engine, "shards": 2, **sizing}  # fmt: skip
            # The server runs only beside the run that attaches to it (tests.stack.services).
            with spark_connect_server(stack) if "spark_conn_id" in sizing else contextlib.nullcontext():
                started = time.monotonic()
                run_id = stack.trigger("ecoval_nightly", conf)
                state = stack.wait_run("ecoval_nightly", run_id, timeout=900)
            runs[name] = {
                "engine": engine,
                "sizing": sizing,
                "state": state,
                "wall_s": round(time.monotonic() - started, 1),
                "tasks": _durations(stack, run_id),
            }
            print(name, json.dumps(runs[name]))
        result = {"rows": args.rows, "startup": stack.startup_s, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
