"""The refit's steps between ``decide`` and ``propagate`` (:mod:`.steps`): cluster, train_shard x N, fit_model.

``cluster`` plans the trainings, each ``train_shard`` runs a shard of them, ``fit_model`` fits the
state from every shard's utilities (:func:`fit_reference`), values every row once to centre it,
computes the review's removal curve (:func:`review_curve`) and registers the model. Each saves
what it made in the run's workspace, so a retried step reuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.engines import Engine
from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.keys import read_keys, write_keys
from ecoval_ops.pipeline.refs import RunRef
from ecoval_ops.pipeline.review import removal_curve
from ecoval_ops.process import fault_point
from ecoval_ops.reporting.pages import REMOVAL_FILE, saved_curve
from ecoval_ops.valuation.reference import HOLDOUT_SCHEME

__all__ = ["HOLDOUT_TAG", "MEMBER_KEYS", "cluster", "fit_model", "fit_reference", "review_curve", "train_shard"]

HOLDOUT_TAG = "holdout"
"""The lineage entry (model version tag ``ecoval.holdout``) naming the hold-out split a model was fitted on."""

MEMBER_KEYS = "member_keys.parquet"
"""The keys of the plan's reference rows (the state's members), saved beside the plan with their Arrow type."""


def cluster(ref: RunRef, engine: Engine) -> list[int]:
    """Stage 0 of a refit: the engine draws the reference set and plans the trainings; save the plan.

    Returns:
        The shard indices of the LCO trainings (``shards`` groups at most).
    """
    from ecoval_ops.valuation import TrainingPlan

    run = ref.run
    ws = run.workspace
    target = ws.plan(ref.started())
    if not ws.exists(target):
        plan, members = engine.plan(run)
        with ws.atomic(target) as tmp:
            plan.save(tmp)
            write_keys(members, tmp / MEMBER_KEYS)
    return list(range(len(ws.read(target, TrainingPlan.load).shards(run.config.shards))))


def train_shard(ref: RunRef, index: int) -> None:
    """Run the trainings of shard ``index`` and log them as a child run of the parent.

    A shard whose utilities are saved is not trained again (a retried task reuses them).
    """
    from ecoval_ops.tracking import Shard
    from ecoval_ops.valuation import TrainingPlan

    run_id, run = ref.started(), ref.run
    ws = run.workspace
    target = ws.shard(run_id, index)
    if ws.exists(target):
        return
    plan = ws.read(ws.plan(run_id), TrainingPlan.load)
    shards = plan.shards(run.config.shards)
    if not 0 <= index < len(shards):
        raise InvalidInputError(f"shard {index} does not exist; the plan has {len(shards)} shards")
    utilities = run.estimator().train_masks(plan, shards[index])
    run.tracker.log_shard(
        run_id,
        Shard(
            f"shard-{index}",
            tuple(plan.left_out(i) for i in shards[index]),
            tuple(float(u) for u in utilities.mean(axis=1)),
        ),
    )
    with ws.atomic(target) as tmp, open(tmp, "wb") as f:
        np.save(f, utilities, allow_pickle=False)
    fault_point("shard_trained")


def _utilities(path: Path) -> NDArray[np.float64]:
    """A shard's saved utilities."""
    return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)


def fit_reference(ref: RunRef) -> None:
    """Fit the state on the plan's reference rows from every shard's utilities; save it (a retry reuses it).

    Needs no engine, so ``ecoval run`` calls it in the trainings' child process (it holds the
    reference set and its neighbour indexes in memory).

    Raises:
        EcovalError: a shard has no saved utilities.
    """
    from ecoval_ops.valuation import TrainingPlan

    run_id, run = ref.started(), ref.run
    ws = run.workspace
    if ws.exists(ws.reference_model(run_id)):
        return
    plan = ws.read(ws.plan(run_id), TrainingPlan.load)
    shards = plan.shards(run.config.shards)
    missing = [i for i in range(len(shards)) if not ws.exists(ws.shard(run_id, i))]
    if missing:
        raise EcovalError(f"shards {missing} of run {run_id} have not finished; run train_shard for them first")
    utilities = np.concatenate([ws.read(ws.shard(run_id, i), _utilities) for i in range(len(shards))])
    fitted = run.estimator().fit_reference(plan, utilities, n_trainings=plan.n_trainings(len(shards)))
    with ws.atomic(ws.reference_model(run_id)) as tmp:
        fitted.save(tmp)


def fit_model(
    ref: RunRef, engine: Engine, *, train: Callable[[Callable[[RunRef], None], RunRef], None] | None = None
) -> RunRef:
    """Fit the production function from every shard, value every row, centre, register the model.

    The state is fitted on the plan's reference rows (:func:`fit_reference`, reused when saved);
    the engine's first row pass writes every row's inputs to the workspace and sums ``x_i`` per
    cluster, which centres the values over all training rows (spec section 5b). The centred state
    is saved, then :func:`review_curve` computes the review's removal curve from it. ``train(fn, ref)``
    runs those two trainings (default here; ``ecoval run`` runs them in its child process).

    Returns:
        ``ref`` with the registered model version (alias ``current``).

    Raises:
        EcovalError: a shard has no saved utilities.
    """
    from ecoval_ops.valuation import EcoVal

    run_id, run = ref.started(), ref.run
    cfg, ws = run.config, run.workspace
    curve, member_keys = None, None
    train = train or (lambda fn, r: fn(r))
    if ws.exists(ws.model(run_id)):
        # Saved after registering: a retry finds the version registered before, keys and all.
        ev = ws.read(ws.model(run_id), EcoVal.load)
    else:
        if not ws.exists(ws.centred_model(run_id)):
            train(fit_reference, ref)
            with ws.output(ws.inputs(run_id)) as out:
                x_sum = engine.row_inputs(run, ws.reference_model(run_id), out, only_new=False)
            with ws.atomic(ws.centred_model(run_id)) as tmp:
                ws.read(ws.reference_model(run_id), EcoVal.load).centre(x_sum).save(tmp)
        train(review_curve, ref)
        ev = ws.read(ws.centred_model(run_id), EcoVal.load)
        curve = ws.read(ws.curve(run_id), saved_curve) if ws.exists(ws.curve(run_id)) else None
        member_keys = ws.read(ws.plan(run_id) / MEMBER_KEYS, read_keys)
    version = run.tracker.registry.register(
        run_id,
        ev,
        model_name=cfg.registered_model_name,
        columns={
            "embedding": run.columns.embedding_columns,
            "is_vector": cfg.source.embedding_col is not None,
            "label": cfg.source.label,
        },
        lineage={
            "table": str(cfg.source.table),
            "table_version": str(ref.table_version),
            "run_id": run_id,
            **({HOLDOUT_TAG: HOLDOUT_SCHEME} if cfg.source.validation_table is None else {}),
        },
        config=cfg.loggable(),
        member_keys=member_keys,
    )
    if not ws.exists(ws.model(run_id)):
        with ws.atomic(ws.model(run_id)) as tmp:
            ev.save(tmp)
            if curve is not None:
                (tmp / REMOVAL_FILE).write_text(json.dumps(curve.to_dict()))
    return RunRef(run, ref.mode, run_id, version)


def review_curve(ref: RunRef) -> None:
    """Save the review's removal curve of a refit, computed from its centred state (a retry reuses it).

    It retrains (torch), so ``ecoval run`` calls it in the child process of the trainings.
    """
    from ecoval_ops.valuation import EcoVal, TrainingPlan

    run_id, run = ref.started(), ref.run
    ws = run.workspace
    if ws.exists(ws.curve(run_id)):
        return
    plan = ws.read(ws.plan(run_id), TrainingPlan.load)
    curve = removal_curve(plan, ws.read(ws.centred_model(run_id), EcoVal.load), seed=run.config.method.seed)
    with ws.atomic(ws.curve(run_id)) as tmp:
        tmp.write_text(json.dumps(curve.to_dict()))
