"""One valuation run over a Delta table (architecture.md, "Data flow of one nightly run").

detect -> embed -> decide -> [cluster -> shards -> fit] -> propagate -> write (one MERGE) ->
report, with either engine of :mod:`ecoval_ops.engines`. The steps live in
:mod:`ecoval_ops.pipeline.steps`; the Airflow DAG calls the same functions task by task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ecoval_ops.config import RunConfig
from ecoval_ops.engines import Engine, engine_for
from ecoval_ops.pipeline import fitting, steps
from ecoval_ops.pipeline.refit import Mode
from ecoval_ops.progress import Progress

__all__ = ["ISOLATED_TRAINING_ROWS", "RunSummary", "run_valuation"]

ISOLATED_TRAINING_ROWS = 50_000
"""Tables from this many rows train their shards, fit the reference state and train the review's
removal curve in a child process, so torch and their buffers never count against the driver (the DAG's
``train_shard`` tasks are separate processes already); smaller ones train in-process, where a
child's start would cost more than the trainings."""


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the CLI's summary and for tests."""

    mode: Mode
    run_id: str | None
    rows_valued: int
    rows_in_sample: int
    rows_out_of_sample: int
    suspect_share: float
    model_version: str | None
    table_version_read: int
    table_version_written: int | None
    n_trainings: int
    metrics: dict[str, float] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    alert: str | None = None
    preview: list[dict[str, Any]] = field(default_factory=list)


class _Stages:
    """Wall time of each stage, and the process's peak resident memory when it ended.

    The peak is the Python process's (``ru_maxrss``, never decreasing); Spark's JVM is a
    separate process and is not included.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        import resource

        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.peak_rss_mb[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextmanager
def _worker(isolated: bool) -> Iterator[Callable[..., None]]:
    """Calls a step on a run reference (as JSON) here, or (``isolated``) in one spawned child kept for the run."""
    if not isolated:
        yield lambda step, ref, *args: step(ref.to_dict(secrets=True), *args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
        yield lambda step, ref, *args: child.submit(step, ref.to_dict(secrets=True), *args).result()


def _train_shard(ref: dict[str, Any], index: int) -> None:
    """:func:`~ecoval_ops.pipeline.fitting.train_shard` of a run reference as JSON (a child's entry point)."""
    fitting.train_shard(steps.RunRef.from_dict(ref), index)


def _fit_reference(ref: dict[str, Any]) -> None:
    """:func:`~ecoval_ops.pipeline.fitting.fit_reference` of a run reference as JSON (a child's entry point)."""
    fitting.fit_reference(steps.RunRef.from_dict(ref))


def _review_curve(ref: dict[str, Any]) -> None:
    """:func:`~ecoval_ops.pipeline.fitting.review_curve` of a run reference as JSON (a child's entry point)."""
    fitting.review_curve(steps.RunRef.from_dict(ref))


def run_valuation(cfg: RunConfig, engine: Engine | None = None, progress: Progress | None = None) -> RunSummary:
    """Run one valuation of ``cfg.source.table`` end to end: every step of :mod:`.steps` in turn.

    The LCO shards (``cfg.shards``) run one after another, in a child process from
    :data:`ISOLATED_TRAINING_ROWS` rows; the Airflow DAG runs the same steps as separate tasks.
    ``detect`` pins the configuration and versions once.

    Args:
        cfg: the run configuration.
        engine: the engine; default the one ``cfg.engine`` names.
        progress: stage bars for a terminal; default none.

    Raises:
        InvalidInputError: bad input; the table is left as it was.
        EcovalError: an engine or tracking failure; the parent run is marked FAILED.
    """
    engine = engine or engine_for(cfg)
    bars = progress or Progress(enabled=False)
    stages = _Stages()
    with stages("embed"), bars.stage("embedding", 1) as advance:
        detected = steps.detect(cfg, engine)
        run, version = detected.run, detected.run.table_version
        steps.embed(run, engine)
        advance(1)
    with stages("decide"):
        ref = steps.decide(run, engine)
    if ref.mode == "noop":
        return RunSummary("noop", None, 0, 0, 0, 0.0, ref.model_version, version, None, 0)
    try:
        if ref.mode == "refit":
            with stages("cluster"), bars.stage("clustering", 1) as advance:
                shards = fitting.cluster(ref, engine)
                advance(1)
            with _worker(detected.rows >= ISOLATED_TRAINING_ROWS) as call:
                with stages("train"), bars.stage("trainings", len(shards)) as advance:
                    for index in shards:
                        call(_train_shard, ref, index)
                        advance(1)
                with stages("fit"), bars.stage("fitting", 1) as advance:
                    call(_fit_reference, ref)
                    ref = fitting.fit_model(ref, engine, review=lambda r: call(_review_curve, r))
                    advance(1)
        with stages("value"), bars.stage("propagation", 1) as advance:
            steps.propagate(ref, engine)
            advance(1)
        with stages("write"), bars.stage("writing", 1) as advance:
            written = steps.write(ref, engine)
            advance(1)
        figures = steps.report(
            ref,
            engine,
            written,
            {
                **{f"seconds_{k}": v for k, v in stages.seconds.items()},
                **{f"peak_rss_mb_{k}": v for k, v in stages.peak_rss_mb.items()},
            },
        )
    except BaseException:
        steps.fail(ref)
        raise
    return RunSummary(
        mode=ref.mode,
        run_id=ref.run_id,
        rows_valued=figures["rows_valued"],
        rows_in_sample=figures["rows_in_sample"],
        rows_out_of_sample=figures["rows_out_of_sample"],
        suspect_share=figures["suspect_share"],
        model_version=ref.model_version,
        table_version_read=version,
        table_version_written=written,
        n_trainings=figures["n_trainings"],
        metrics={**figures["metrics"], **figures["night"]},
        stage_seconds=dict(stages.seconds),
        stage_peak_rss_mb=dict(stages.peak_rss_mb),
        alert=figures["alert"],
        preview=figures["preview"],
    )
