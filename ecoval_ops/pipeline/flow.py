"""The steps of a valuation run, their inputs and their order, declared once (:data:`STEPS`).

``ecoval run`` (:mod:`.run`), the Airflow task group (:mod:`ecoval_ops.airflow`) and the
``spark_jobs/`` entry points (:mod:`.submit`) are built from this declaration: which step takes
which earlier step's result, which steps only a refit runs, which one is mapped over the shards,
which ones train. :data:`FAILURE` is what each of them runs when a step fails.

Each step's ``call`` takes the engine (None for a step that needs none) and the results of its
``inputs``, in order; a result that is a :class:`~.refs.Detection` or a :class:`~.refs.RunRef`
travels as JSON between processes (:func:`encode`, :func:`decode`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ecoval_ops.config import RunConfig
from ecoval_ops.engines import Engine
from ecoval_ops.pipeline import fitting, steps
from ecoval_ops.pipeline.refs import Detection, RunRef

__all__ = [
    "DECISION",
    "FAILURE",
    "REFIT",
    "STEPS",
    "VALUING",
    "Step",
    "branch_targets",
    "decode",
    "encode",
    "step",
]

VALUING = frozenset({"refit", "incremental"})
"""The modes that value rows; a ``noop`` run stops after the decision."""
REFIT = frozenset({"refit"})


@dataclass(frozen=True)
class Step:
    """One step of a run.

    Attributes:
        name: the step's name: its task id, its ``spark_jobs`` stage, its timing key's source.
        call: ``call(engine, *inputs, **hooks)``; the hooks are a front end's extras (``run_key``
            of ``decide``, ``train`` of ``fit_model``, ``extra`` of ``report``).
        inputs: the earlier steps whose results it takes, in order.
        after: earlier steps it waits for without taking their result.
        modes: the modes it runs in; None for the steps before the decision, which every run runs.
        mapped_over: one call per item of that step's result (the item is the last input).
        stage: the timing of ``ecoval run`` it counts in (``seconds_<stage>``).
        label: its progress bar.
        result: :class:`~.refs.Detection` or :class:`~.refs.RunRef` when it returns one.
        engine: it opens the run's engine (a training step does not).
        trains: it trains the LCO models: the GPU pool and queue in Airflow.
        isolated: its trainings run in ``ecoval run``'s child process from
            :data:`~.run.ISOLATED_TRAINING_ROWS` rows (torch's buffers never count against the driver).
        spark_job: the ``spark_jobs/<name>.py`` entry point that runs it, if any.
    """

    name: str
    call: Callable[..., Any]
    inputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    modes: frozenset[str] | None = VALUING
    mapped_over: str | None = None
    stage: str | None = None
    label: str | None = None
    result: type[Detection] | type[RunRef] | None = None
    engine: bool = True
    trains: bool = False
    isolated: bool = False
    spark_job: str | None = None

    @property
    def needs(self) -> tuple[str, ...]:
        """Every step it waits for: its inputs, the step it is mapped over, and ``after``."""
        mapped = (self.mapped_over,) if self.mapped_over else ()
        return tuple(dict.fromkeys((*self.inputs, *mapped, *self.after)))


def _detect(engine: Engine, cfg: RunConfig) -> Detection:
    return steps.detect(cfg, engine)


def _embed(engine: Engine, detected: Detection) -> int:
    return steps.embed(detected.run, engine)


def _decide(engine: Engine, detected: Detection, *, run_key: str | None = None) -> RunRef:
    return steps.decide(detected.run, engine, run_key=run_key)


def _cluster(engine: Engine, ref: RunRef) -> list[int]:
    return fitting.cluster(ref, engine)


def _train_shard(engine: None, ref: RunRef, index: int) -> int:
    fitting.train_shard(ref, index)
    return index


def _fit_model(engine: Engine, ref: RunRef, *, train: Callable[..., None] | None = None) -> RunRef:
    return fitting.fit_model(ref, engine, train=train)


def _propagate(engine: Engine, ref: RunRef) -> int:
    return steps.propagate(ref, engine)


def _write(engine: Engine, ref: RunRef) -> int | None:
    return steps.write(ref, engine)


def _report(engine: Engine, ref: RunRef, written: int | None, *, extra: dict[str, float] | None = None) -> Any:
    return steps.report(ref, engine, written, extra)


def _fail(engine: None, ref: RunRef) -> None:
    steps.fail(ref)


DECISION = "decide"
"""The step whose result carries the mode; the steps after it run in their ``modes`` only."""

STEPS: tuple[Step, ...] = (
    Step("detect", _detect, modes=None, stage="embed", label="checking", result=Detection, spark_job="embed"),
    Step("embed", _embed, ("detect",), modes=None, stage="embed", label="embedding", spark_job="embed"),
    Step(DECISION, _decide, ("detect",), ("embed",), modes=None, stage="decide", label="deciding", result=RunRef),
    Step("cluster", _cluster, ("decide",), modes=REFIT, stage="cluster", label="clustering", spark_job="cluster"),
    Step(
        "train_shard",
        _train_shard,
        ("decide",),
        modes=REFIT,
        mapped_over="cluster",
        stage="train",
        label="trainings",
        engine=False,
        trains=True,
        isolated=True,
    ),
    Step(
        "fit_model",
        _fit_model,
        ("decide",),
        ("train_shard",),
        REFIT,
        stage="fit",
        label="fitting",
        result=RunRef,
        isolated=True,
    ),
    Step(
        "propagate", _propagate, ("decide",), ("fit_model",), stage="value", label="propagation", spark_job="propagate"
    ),
    Step("write", _write, ("decide",), ("propagate",), stage="write", label="writing"),
    Step("report", _report, ("decide", "write"), stage="report", label="reporting"),
)
"""The run's steps in the order they run."""

FAILURE = Step("fail", _fail, ("decide",), engine=False)
"""Run once after a failed step of a valuing run: closes its parent MLflow run FAILED (the workspace stays)."""


def step(name: str) -> Step:
    """The step called ``name`` (:data:`FAILURE` included)."""
    for s in (*STEPS, FAILURE):
        if s.name == name:
            return s
    raise KeyError(name)


def branch_targets() -> tuple[Step, ...]:
    """The steps that follow the decision directly: the first step of each mode, and those it leads to.

    A step after the decision that waits on a step of fewer modes (``propagate`` after
    ``fit_model``) is one: an orchestrator's branch names it, or skips it, itself.
    """
    decided = [s for s in STEPS if s.modes is not None]
    by_name = {s.name: s for s in decided}
    targets = []
    for s in decided:
        upstream = [by_name[n] for n in s.needs if n in by_name]
        if not upstream or any(u.modes != s.modes for u in upstream):
            targets.append(s)
    return tuple(targets)


def encode(result: Any) -> Any:
    """A step's result as JSON-able values (no secrets)."""
    return result.to_dict() if isinstance(result, (Detection, RunRef)) else result


def decode(name: str, data: Any) -> Any:
    """The result of step ``name`` from :func:`encode`'s values."""
    kind = step(name).result
    return kind.from_dict(dict(data)) if kind is not None and isinstance(data, Mapping) else data
