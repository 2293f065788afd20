"""The stages of an EcoVal fit, each runnable apart (the engines and the DAG run them as steps).

Stage 0 (:func:`fit_clusters`), the plan of the stage 1-2 trainings on the reference rows
(:func:`plan_reference`), the trainings of a shard of masks (:func:`train_masks`) and stages 3-4
on every mask's utilities (:func:`fit_model`). Each reads the estimator's parameters only;
:func:`fit_clusters` and :func:`plan_reference`, the two a distributed engine calls directly,
check them first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation._inputs import check_training_data
from ecoval_ops.valuation.clustering import (
    ClusterModel,
    FeatureSpace,
    KMeansClusterer,
    choose_n_clusters,
    min_cluster_size,
)
from ecoval_ops.valuation.learners import learner_from_name
from ecoval_ops.valuation.model import ValuationModel
from ecoval_ops.valuation.plan import TrainingPlan, stratified_half, stratified_sample
from ecoval_ops.valuation.production import SecondOrderProduction
from ecoval_ops.valuation.propagation import NeighbourPropagator
from ecoval_ops.valuation.reference import (
    quotas,
    reference_mask,
    seeded_draws,
    select_reference,
    smallest_draws,
    stratum_counts,
)
from ecoval_ops.valuation.result import ValuationResult
from ecoval_ops.valuation.utility import per_example_utility, prior_utility

if TYPE_CHECKING:
    from ecoval_ops.valuation.ecoval import EcoVal

__all__ = ["draws_of", "fit_clusters", "fit_model", "plan_reference", "prepare", "train_masks"]


def draws_of(est: EcoVal, n: int, draws: ArrayLike | None) -> NDArray[np.int64]:
    """``u_i`` of ``n`` training rows: ``draws`` when given, else drawn from the estimator's seed."""
    if draws is None:
        return seeded_draws(n, est.seed)
    u = np.asarray(draws)
    if u.shape != (n,) or not np.issubdtype(u.dtype, np.integer):
        raise InvalidInputError(f"draws must be ({n},) integers; found {u.dtype} of shape {u.shape}")
    repeated = n - np.unique(u).size
    if repeated:
        # A draw identifies a member: two rows with one draw would be one member twice.
        raise InvalidInputError(f"draws must be distinct; {repeated} of the {n} repeat an earlier one")
    return u.astype(np.int64)


def prepare(
    est: EcoVal, X_train: ArrayLike, y_train: ArrayLike, X_val: ArrayLike, y_val: ArrayLike, *, draws: ArrayLike | None
) -> TrainingPlan:
    """Stage 0 on the clustering sample, every row assigned, the reference set drawn, its plan made.

    The clustering sample is the ``max_reference_rows`` rows of smallest draw (every row when n
    is no larger); the reference set is stratified by cluster and label (spec section 5b).
    """
    data = check_training_data(X_train, y_train, X_val, y_val)
    X, y = data.X_train, data.y_train
    u = draws_of(est, X.shape[0], draws)
    sample = smallest_draws(u, est.max_reference_rows)
    try:
        space, model = fit_clusters(est, X if sample.size == X.shape[0] else X[sample])
    except InvalidInputError as e:
        if sample.size == X.shape[0]:
            raise
        raise InvalidInputError(
            f"{e}: they are the clustering sample of max_reference_rows = {est.max_reference_rows} of the "
            f"{X.shape[0]} rows; raise max_reference_rows (--reference-rows)"
        ) from e
    clusters = model.assign(space.cluster_space(X))
    counts = stratum_counts(clusters, y, model.n_clusters, data.n_classes)
    thresholds = select_reference(u, clusters, y, quotas(counts, est.max_reference_rows))
    ref = np.flatnonzero(reference_mask(u, clusters, y, thresholds))
    return plan_reference(
        est, space, model, X[ref], y[ref], clusters[ref], u[ref], sizes=counts.sum(axis=1), X_val=data.X_val,
        y_val=data.y_val, classes=data.classes,
    )  # fmt: skip


def fit_clusters(est: EcoVal, X_sample: NDArray[np.float64]) -> tuple[FeatureSpace, ClusterModel]:
    """Stage 0 on the clustering sample: the feature space and the cluster model.

    ``p`` comes from ``n_clusters`` or ``budget``, capped by the sample's rows.

    Raises:
        InvalidInputError: the rows form a single cluster.
    """
    est.check_params()
    n = X_sample.shape[0]
    space = FeatureSpace.fit(X_sample, max_dims=est.pca_dims)
    Z = space.cluster_space(X_sample)
    p = choose_n_clusters(
        n,
        n_clusters=est.n_clusters,
        budget=est.budget,
        pairwise=est.pairwise,
        seeds=est.seeds,
        min_cluster_frac=est.min_cluster_frac,
    )
    clusterer = KMeansClusterer() if est.clusterer is None else est.clusterer
    first = clusterer.fit_predict(Z, p, est.seed)
    model, _ = ClusterModel.from_labels(Z, first, min_size=min_cluster_size(n, est.min_cluster_frac))
    if model.n_clusters < 2:
        raise InvalidInputError(f"the {n} training rows form a single cluster; 2 are needed")
    return space, model


def plan_reference(
    est: EcoVal,
    space: FeatureSpace,
    model: ClusterModel,
    X_ref: NDArray[np.float64],
    y_ref: NDArray[np.int64],
    clusters_ref: NDArray[np.int64],
    draws_ref: NDArray[np.int64],
    *,
    sizes: NDArray[np.int64],
    X_val: NDArray[np.float64],
    y_val: NDArray[np.int64],
    classes: NDArray[Any],
) -> TrainingPlan:
    """The plan of the trainings on the reference rows, in training-row order.

    Args:
        est: the estimator whose parameters plan the trainings.
        space: the feature space of :func:`fit_clusters`.
        model: its cluster model.
        X_ref: ``(R, d)`` the reference rows' embeddings.
        y_ref: ``(R,)`` their class codes.
        clusters_ref: ``(R,)`` their clusters.
        draws_ref: ``(R,)`` their draws.
        sizes: ``(p,)`` ``n_c`` over every training row.
        X_val: validation embeddings.
        y_val: their class codes.
        classes: ``(K,)`` the training labels.
    """
    est.check_params()
    rows = stratified_sample(clusters_ref, est.max_train_rows, np.random.default_rng(est.seed))
    cs = clusters_ref[rows]
    return TrainingPlan(
        X=space.standardise(X_ref[rows]),
        y=y_ref[rows],
        sample_clusters=cs,
        halves=np.stack([stratified_half(cs, np.random.default_rng([est.seed, s])) for s in range(est.seeds)]),
        X_val=space.standardise(X_val),
        y_val=y_val,
        empty=prior_utility(y_ref[rows], y_val, classes.size, est.utility),
        classes=classes,
        space=space,
        model=model,
        Z_reference=space.cluster_space(X_ref),
        reference_y=y_ref,
        reference_clusters=clusters_ref,
        reference_draws=draws_ref,
        sizes=np.asarray(sizes, dtype=np.int64),
        sample=rows,
        pairwise=est.pairwise,
        seed=est.seed,
    )


def train_masks(est: EcoVal, plan: TrainingPlan, indices: ArrayLike) -> NDArray[np.float64]:
    """Run the trainings of masks ``indices`` of ``plan`` (one shard); average over seeds.

    Returns:
        ``(len(indices), m)`` per-example validation utilities ``u_j(S)``; an empty mask gets
        the prior's utility without training.
    """
    index = np.asarray(indices, dtype=np.intp)
    if index.size and (index.min() < 0 or index.max() >= plan.n_masks):
        raise InvalidInputError(f"mask indices must be in [0, {plan.n_masks}); found {index.tolist()}")
    learner = learner_from_name(est.learner, est.device)
    total = np.zeros((index.size, plan.y_val.size))
    for s in range(plan.seeds):
        masks = plan.masks(s, index)
        trained = masks.any(axis=1)
        u = np.tile(plan.empty, (index.size, 1))
        if trained.any():
            proba = learner.predict_proba_masked(
                plan.X, plan.y, masks[trained], plan.X_val, n_classes=plan.classes.size, seed=plan.seed + s
            )
            u[trained] = per_example_utility(proba, plan.y_val, est.utility)
        total += u
    return total / plan.seeds


def fit_model(
    est: EcoVal, plan: TrainingPlan, utilities: ArrayLike, *, n_trainings: int
) -> tuple[ValuationModel, ValuationResult]:
    """Stages 3-4 on the plan's reference rows: the model and the members' in-sample result.

    The production function fits ``phi_c``, ``Gamma_alpha``, ``Gamma_beta*`` and ``gamma`` to the
    leave-out utilities; the propagator fits the row state; when the reference set is a sample,
    ``x_mean`` is the members' until :meth:`ValuationModel.centred`.
    """
    leave_out = plan.leave_out_utilities(np.asarray(utilities, dtype=np.float64))
    production = SecondOrderProduction(shrinkage=est.shrinkage) if est.production is None else est.production
    game = production.fit(leave_out)
    propagator = (
        NeighbourPropagator(
            k_neighbors=est.k_neighbors,
            vote_neighbors=est.vote_neighbors,
            halo_clusters=est.halo_clusters,
            prior_weight=est.prior_weight,
            c_kappa=est.c_kappa,
            empirical_bayes=est.empirical_bayes,
            neighbour_search=est.neighbour_search,
            seed=est.seed,
        )
        if est.propagator is None
        else est.propagator
    )
    clusters = plan.reference_clusters
    state, inputs = propagator.fit(plan.Z_reference, plan.reference_y, clusters, game, sizes=plan.sizes)
    members = ValuationResult(
        values=state.values(inputs.x, clusters),
        intrinsic=inputs.alpha,
        extrinsic=inputs.beta,
        clusters=clusters,
        cluster_values=game.phi[clusters],
        mode="in_sample",
        n_trainings=n_trainings,
        suggested_label=plan.classes[inputs.support],
        label_confidence=inputs.support_share,
        n_classes=plan.classes.size,
    )
    model = ValuationModel(
        classes=plan.classes,
        space=plan.space,
        clusters=plan.model,
        game=game,
        state=state,
        members=members,
        member_draws=plan.reference_draws,
        n_trainings=n_trainings,
    )
    return model, members
