"""The ``spark-submit`` entry points of ``spark_jobs/``: one pipeline step per job.

Each job reads the run configuration (a YAML file, as ``ecoval run --config``) and, after the
embed job, the :class:`~ecoval_ops.pipeline.steps.RunRef` of the run as JSON; it prints its
result as one JSON line on stdout, for the orchestrator that submitted it::

    spark-submit --jars $DELTA_JARS spark_jobs/embed.py --config run.yaml
    spark-submit --jars $DELTA_JARS spark_jobs/cluster.py --config run.yaml --ref '{"table_version": 3, ...}'
    spark-submit --jars $DELTA_JARS spark_jobs/propagate.py --config run.yaml --ref '{...}'

``spark-submit`` starts the driver's JVM before the job runs, so Delta's jars go on its command
line (``--jars`` with the files ``make install`` fetched into ``.jars/``, or
``--packages io.delta:delta-spark_4.2_2.13:4.4.0`` where Maven Central is reachable). The session
is the one ``spark-submit`` configured (master, jars, memory), or the embedded local one when
the job runs under plain Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Literal

from ecoval_ops.exceptions import EcovalError

__all__ = ["main"]

Job = Literal["embed", "cluster", "propagate"]


def _run(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    from ecoval_ops.config import load_config
    from ecoval_ops.pipeline import steps
    from ecoval_ops.pipeline.engines import SparkEngine

    cfg = load_config(args.config, engine="spark")
    engine = SparkEngine()
    if job == "embed":
        version = steps.detect(cfg).table_version
        return {"table_version": version, "rows_embedded": steps.embed(cfg, version, engine)}
    if args.ref is None:
        raise EcovalError(f"the {job} job needs --ref, the run reference printed by the decide step")
    ref = steps.RunRef.from_dict(json.loads(args.ref))
    if job == "cluster":
        return {"shards": steps.cluster(cfg, ref, engine)}
    return {"rows_valued": steps.propagate(cfg, ref, engine)}


def main(job: Job, argv: list[str] | None = None) -> int:
    """Run one step as a Spark job; returns the exit status (2 with one line on bad input)."""
    parser = argparse.ArgumentParser(prog=f"spark_jobs/{job}.py", description=f"EcoVal {job} step on Spark")
    parser.add_argument("--config", required=True, help="YAML run configuration (the keys of `ecoval run`)")
    parser.add_argument("--ref", help="the run reference as JSON (cluster and propagate)")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(_run(job, args), sort_keys=True))
    except EcovalError as e:
        print(f"{job}: error: {e}", file=sys.stderr)
        return 2
    return 0
