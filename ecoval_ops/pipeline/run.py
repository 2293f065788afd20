"""One valuation run over a Delta table in one process (architecture.md, "Data flow of one nightly run").

The steps and their order are :data:`~ecoval_ops.pipeline.flow.STEPS`, run in turn with either
engine of :mod:`ecoval_ops.engines`; the Airflow task group runs the same steps task by task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from ecoval_ops.config import RunConfig
from ecoval_ops.engines import Engine, engine_for
from ecoval_ops.pipeline.flow import DECISION, FAILURE, STEPS, VALUING, Step, step
from ecoval_ops.pipeline.refit import Mode
from ecoval_ops.pipeline.refs import RunRef
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
def _worker(isolated: bool) -> Iterator[Callable[..., Any]]:
    """Calls ``fn(ref, *args)`` here, or (``isolated``) in one spawned child kept for the run.

    The child gets the run reference as JSON, secrets included (a pipe, never a log).
    """
    if not isolated:
        yield lambda fn, ref, *args: fn(ref, *args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
        yield lambda fn, ref, *args: child.submit(_in_child, fn, ref.to_dict(secrets=True), *args).result()


def _in_child(fn: Callable[..., Any], ref: dict[str, Any], *args: Any) -> Any:
    """``fn`` on a run reference given as JSON (the child's entry point)."""
    return fn(RunRef.from_dict(ref), *args)


def _shard(ref: RunRef, index: int) -> int:
    return int(step("train_shard").call(None, ref, index))


def run_valuation(cfg: RunConfig, engine: Engine | None = None, progress: Progress | None = None) -> RunSummary:
    """Run one valuation of ``cfg.source.table`` end to end: every step of :data:`~.flow.STEPS` in turn.

    The steps a run's mode leaves out are skipped; the LCO shards (``cfg.shards``) run one after
    another, the training steps in a child process from :data:`ISOLATED_TRAINING_ROWS` rows; the
    Airflow task group runs the same steps as separate tasks. ``detect`` pins the configuration
    and versions once; after a failed step, :data:`~.flow.FAILURE` closes the parent run.

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
    results: dict[str, Any] = {}
    with ExitStack() as trainings:
        child: Callable[..., Any] | None = None
        try:
            for s in STEPS:
                if s.modes is not None and results[DECISION].mode not in s.modes:
                    continue
                if s.isolated and child is None:
                    child = trainings.enter_context(_worker(results["detect"].rows >= ISOLATED_TRAINING_ROWS))
                elif not s.isolated and child is not None:
                    # The trainings are over: the child and its buffers go before the row passes.
                    trainings.close()
                    child = None
                inputs = [results[n] for n in s.inputs] if s.name != "detect" else [cfg]
                items = results[s.mapped_over] if s.mapped_over else [None]
                with stages(s.stage or s.name), bars.stage(s.label or s.name, len(items)) as advance:
                    done = []
                    for item in items:
                        done.append(_call(s, engine, inputs, item, child, stages))
                        advance(1)
                results[s.name] = done if s.mapped_over else done[0]
        except BaseException:
            decided = results.get(DECISION)
            if decided is not None and decided.mode in VALUING:
                FAILURE.call(None, decided)
            raise
    return _summary(results, stages)


def _call(
    s: Step, engine: Engine, inputs: list[Any], item: Any, child: Callable[..., Any] | None, stages: _Stages
) -> Any:
    """One call of step ``s``, with ``ecoval run``'s hooks: trainings in the child, the timings in the report."""
    if s.mapped_over:
        assert child is not None
        return child(_shard, *inputs, item)
    hooks: dict[str, Any] = {}
    if s.name == "fit_model" and child is not None:
        hooks["train"] = child
    if s.name == "report":
        hooks["extra"] = {
            **{f"seconds_{k}": v for k, v in stages.seconds.items()},
            **{f"peak_rss_mb_{k}": v for k, v in stages.peak_rss_mb.items()},
        }
    return s.call(engine if s.engine else None, *inputs, **hooks)


def _summary(results: dict[str, Any], stages: _Stages) -> RunSummary:
    detected, decided = results["detect"], results[DECISION]
    version = detected.run.table_version
    if decided.mode == "noop":
        return RunSummary("noop", None, 0, 0, 0, 0.0, decided.model_version, version, None, 0)
    figures = results["report"]
    model_version = results["fit_model"].model_version if "fit_model" in results else decided.model_version
    return RunSummary(
        mode=decided.mode,
        run_id=decided.run_id,
        rows_valued=figures["rows_valued"],
        rows_in_sample=figures["rows_in_sample"],
        rows_out_of_sample=figures["rows_out_of_sample"],
        suspect_share=figures["suspect_share"],
        model_version=model_version,
        table_version_read=version,
        table_version_written=results["write"],
        n_trainings=figures["n_trainings"],
        metrics={**figures["metrics"], **figures["night"]},
        stage_seconds=dict(stages.seconds),
        stage_peak_rss_mb=dict(stages.peak_rss_mb),
        alert=figures["alert"],
        preview=figures["preview"],
    )
