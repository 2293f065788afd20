"""The ``spark-submit`` entry points of ``spark_jobs/``: one pipeline step per job.

Which steps of :data:`~ecoval_ops.pipeline.flow.STEPS` each job runs is the steps' ``spark_job``
(:func:`jobs`). The embed job (``detect`` and ``embed``) resolves the run configuration (a YAML
file, as ``ecoval run --config``) and pins it with the versions it read; it prints the
:class:`~ecoval_ops.pipeline.refs.Detection`, which the orchestrator's ``decide`` turns into the
run reference. The cluster and propagate jobs take that reference (``--ref``) and nothing else:
the configuration it pins is the run's, whatever the YAML file says by then. Each job prints
``{step: result}`` as one JSON line on stdout::

    spark-submit --packages $DELTA spark_jobs/embed.py --config run.yaml
    spark-submit --packages $DELTA spark_jobs/cluster.py --ref '{"run": {...}, "mode": "refit", ...}'
    spark-submit --packages $DELTA spark_jobs/propagate.py --ref '{...}'

``spark-submit`` starts the driver's JVM before the job runs, so Delta's jars go on its command
line: ``DELTA=io.delta:delta-spark_4.2_2.13:4.4.0`` resolved by Spark from Maven Central, or
``--jars`` with the files of ``make jars`` on an air-gapped cluster. The session
is the one ``spark-submit`` configured (master, jars, memory), or the embedded local one when
the job runs under plain Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ecoval_ops.exceptions import EcovalError

__all__ = ["jobs", "main"]


def jobs() -> dict[str, list[str]]:
    """Each ``spark_jobs/`` job and the steps of :data:`~.flow.STEPS` it runs, in order."""
    from ecoval_ops.pipeline.flow import STEPS

    out: dict[str, list[str]] = {}
    for s in STEPS:
        if s.spark_job is not None:
            out.setdefault(s.spark_job, []).append(s.name)
    return out


def _run(job: str, args: argparse.Namespace) -> dict[str, Any]:
    from ecoval_ops.config import load_config
    from ecoval_ops.engines import engine_for
    from ecoval_ops.pipeline.flow import DECISION, encode, step
    from ecoval_ops.pipeline.refs import RunRef

    names = jobs()[job]
    results: dict[str, Any] = {}
    if names[0] == "detect":
        if args.config is None or args.ref is not None:
            raise EcovalError(f"the {job} job takes --config (the run's settings) and no --ref")
        cfg = load_config(args.config, engine="spark")
    else:
        if args.ref is None or args.config is not None:
            raise EcovalError(
                f"the {job} job takes --ref, the run reference of the decide step, and no --config: the run's "
                "settings are pinned in it"
            )
        try:
            results[DECISION] = RunRef.from_dict(json.loads(args.ref))
        except (ValueError, KeyError, TypeError) as e:
            raise EcovalError(f"--ref is not a run reference: {e}") from e
        cfg = results[DECISION].run.config
    engine = engine_for(cfg)
    for name in names:
        s = step(name)
        results[name] = s.call(engine, *([cfg] if name == "detect" else [results[n] for n in s.inputs]))
    return {name: encode(results[name]) for name in names}


def main(job: str, argv: list[str] | None = None) -> int:
    """Run one job's steps on Spark; returns the exit status (2 with one line on bad input).

    Prints ``{step: result}`` for each step of the job as one JSON line.
    """
    parser = argparse.ArgumentParser(prog=f"spark_jobs/{job}.py", description=f"EcoVal {job} step on Spark")
    parser.add_argument("--config", help="YAML run configuration, the keys of `ecoval run` (embed)")
    parser.add_argument("--ref", help="the run reference as JSON, with the pinned settings (cluster and propagate)")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(_run(job, args), sort_keys=True))
    except EcovalError as e:
        print(f"{job}: error: {e}", file=sys.stderr)
        return 2
    return 0
