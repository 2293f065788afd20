"""The EcoVal estimator: stages 0-3 and out-of-sample valuation (the whole method spec).

``EcoVal().fit(X_train, y_train, X_val, y_val)`` clusters the rows (stage 0), runs
``(2 + p + p(p-1)/2) * seeds`` masked trainings (stages 1 and 2), fits the production function
(section 3) and propagates cluster values to rows (section 4). ``value`` values new rows
against the fitted state without retraining (section 5).

``fit`` is three steps that can also run apart (the Airflow DAG runs them as separate tasks):
``prepare`` (stage 0 and the :class:`TrainingPlan`), ``train_masks`` on groups of masks (one
shard each), and ``fit_plan`` on the utilities of all masks.

At lakehouse scale (spec section 5b) the fitted state rests on a reference set of at most
``max_reference_rows`` rows (:mod:`ecoval_ops.valuation.reference`); a distributed engine runs
the O(n) passes itself: :meth:`fit_clusters` and :meth:`plan_reference` on the rows it
collected, :meth:`fit_reference`, then every row valued by :meth:`value_rows` on its executors
and :meth:`centre` on the per-cluster sums.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecoval_ops.exceptions import InvalidInputError, NotFittedError, StateFormatError
from ecoval_ops.valuation._inputs import check_features, check_labels, check_training_data, encode_labels
from ecoval_ops.valuation._saved import fitted_arrays, fitted_from_arrays, read_saved, write_saved
from ecoval_ops.valuation.clustering import (
    ClusterAssigner,
    ClusterModel,
    FeatureSpace,
    KMeansClusterer,
    choose_n_clusters,
    min_cluster_size,
)
from ecoval_ops.valuation.learners import learner_from_name
from ecoval_ops.valuation.params import check_params
from ecoval_ops.valuation.plan import TrainingPlan, stratified_half, stratified_sample
from ecoval_ops.valuation.production import ClusterGame, SecondOrderProduction
from ecoval_ops.valuation.propagation import NeighbourPropagator, PropagationState
from ecoval_ops.valuation.protocols import Clusterer, ProductionFunction, Propagator
from ecoval_ops.valuation.reference import (
    member_index,
    quotas,
    reference_mask,
    seeded_draws,
    select_reference,
    smallest_draws,
    stratum_counts,
)
from ecoval_ops.valuation.result import ValuationResult
from ecoval_ops.valuation.trainer import DeviceName
from ecoval_ops.valuation.utility import UtilityName, per_example_utility, prior_utility

__all__ = ["EcoVal"]


_FORMAT_VERSION = 3
"""2: the label vote's halo, supervised metric and leave-cluster-out prior joined the state.
3: the members are the reference set; ``n_c`` and the members' draws joined the state."""
_STATE_FILE = "state.npz"
_META_FILE = "ecoval.json"


class EcoVal:
    """EcoVal data valuation (Tarun et al., KDD 2024), as defined in the method spec.

    Args:
        n_clusters: p; ``None`` takes the largest p whose trainings fit ``budget``.
        budget: most model fits R, used when ``n_clusters`` is None. Default ``None`` = 80
            (p = 12 with the pairwise stage).
        pairwise: run the O(p^2) pairwise leave-out stage. Default True.
        utility: ``"log_likelihood"`` (clipped log-probability of the true label) or
            ``"accuracy"``. Default ``"log_likelihood"``.
        learner: ``"logistic"`` (batched softmax regression), ``"mlp"`` (batched one-hidden-layer
            MLP), a scikit-learn classifier (trained one model at a time) or an object with
            ``predict_proba_masked``. Default ``"logistic"``.
        k_neighbors: within-cluster neighbours of the redundancy ``rho``, k. Default 10.
        vote_neighbors: neighbours of the intrinsic label vote. Default 20.
        halo_clusters: nearest other clusters whose members join the neighbours. Default 0.
        prior_weight: ``m0``, the leave-cluster-out label prior in pseudo-neighbours. Default 20.0.
        c_kappa: ``kappa = c_kappa |mu|`` weighs a row's effective input against its cluster's
            mean. Default 20.0.
        seeds: repeated trainings averaged with common random numbers. Default 1.
        seed: seeds k-means, the half split, sampling and the learner. Default 0.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the torch learners. Default ``"auto"``.
        max_train_rows: trainings run on a cluster-stratified sample of at most this many
            reference rows. Default 100_000.
        max_reference_rows: R, the most training rows that clustering, trainings and neighbours
            rest on (spec section 5b); beyond it a sample stratified by cluster and label.
            Default 200_000.
        min_cluster_frac: smallest cluster as a share of the rows (at least 2 rows).
            Default 0.01.
        pca_dims: embeddings wider than this are clustered in this many PCA dimensions.
            Default 64.
        clusterer: a :class:`~ecoval_ops.valuation.protocols.Clusterer`; ``None`` = k-means.
        production: a :class:`~ecoval_ops.valuation.protocols.ProductionFunction` (section 3);
            ``None`` = :class:`SecondOrderProduction` with ``shrinkage``.
        propagator: a :class:`~ecoval_ops.valuation.protocols.Propagator` (section 4); ``None`` =
            :class:`NeighbourPropagator` with ``k_neighbors``, ``vote_neighbors``, ``halo_clusters``,
            ``prior_weight``, ``c_kappa`` and ``empirical_bayes``.
        shrinkage: James-Stein shrinkage of ``V_c`` and ``I_cd``. Default True.
        empirical_bayes: empirical-Bayes shrinkage of cluster shares. Default True.

    Attributes:
        values_: ``(n,)`` row values ``v_i``.
        intrinsic_: ``(n,)`` ``alpha_i``.
        extrinsic_: ``(n,)`` ``beta_i``.
        clusters_: ``(n,)`` cluster id per row.
        members_: positions in ``result_`` of the state's members (the reference rows); after
            :meth:`load`, ``result_`` holds the members only.
        member_draws_: ``(R,)`` the members' draws ``u_i`` (what identifies a member row).
        cluster_values_: ``(p,)`` ``phi_c``.
        gamma_alpha_: ``Gamma_alpha``.
        gamma_beta_: ``Gamma_beta*``.
        returns_to_scale_: ``gamma``.
        n_trainings_: model trainings actually run.
        n_clusters_: p after capping and merging.
        classes_: ``(K,)`` training labels.
        result_: the in-sample :class:`ValuationResult`.
        game_: the fitted :class:`ClusterGame`.
        utilities_: the per-example :class:`LeaveOutUtilities` of the trainings (not saved).
        feature_space_, cluster_model_, state_: the state that values new rows.
    """

    state_: PropagationState
    """Declared here because :meth:`centre` replaces it (set by the fit)."""

    def __init__(
        self,
        *,
        n_clusters: int | None = None,
        budget: int | None = None,
        pairwise: bool = True,
        utility: UtilityName = "log_likelihood",
        learner: Any = "logistic",
        k_neighbors: int = 10,
        vote_neighbors: int = 20,
        halo_clusters: int = 0,
        prior_weight: float = 20.0,
        c_kappa: float = 20.0,
        seeds: int = 1,
        seed: int = 0,
        device: DeviceName = "auto",
        max_train_rows: int = 100_000,
        max_reference_rows: int = 200_000,
        min_cluster_frac: float = 0.01,
        pca_dims: int = 64,
        clusterer: Clusterer | None = None,
        production: ProductionFunction | None = None,
        propagator: Propagator | None = None,
        shrinkage: bool = True,
        empirical_bayes: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.budget = budget
        self.pairwise = pairwise
        self.utility = utility
        self.learner = learner
        self.k_neighbors = k_neighbors
        self.vote_neighbors = vote_neighbors
        self.halo_clusters = halo_clusters
        self.prior_weight = prior_weight
        self.c_kappa = c_kappa
        self.seeds = seeds
        self.seed = seed
        self.device = device
        self.max_train_rows = max_train_rows
        self.max_reference_rows = max_reference_rows
        self.min_cluster_frac = min_cluster_frac
        self.pca_dims = pca_dims
        self.clusterer = clusterer
        self.production = production
        self.propagator = propagator
        self.shrinkage = shrinkage
        self.empirical_bayes = empirical_bayes

    def __repr__(self) -> str:
        return f"EcoVal({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"

    def fit(
        self,
        X_train: ArrayLike,
        y_train: ArrayLike,
        X_val: ArrayLike,
        y_val: ArrayLike,
        *,
        draws: ArrayLike | None = None,
    ) -> EcoVal:
        """Value every training row: :meth:`prepare`, :meth:`train_masks` on every mask, :meth:`fit_plan`.

        Args:
            X_train: ``(n, d)`` float embeddings of the training rows.
            y_train: ``(n,)`` labels (at least two classes).
            X_val: ``(m, d)`` validation embeddings.
            y_val: ``(m,)`` validation labels, all seen in ``y_train``.
            draws: ``(n,)`` per-row draws in ``[0, 2^63)`` that choose the reference set when
                n > ``max_reference_rows`` (:mod:`~ecoval_ops.valuation.reference`; the engines
                pass :func:`~ecoval_ops.valuation.reference.key_draws` of the row keys);
                default drawn from ``seed``.

        Returns:
            self, with the fitted attributes set.

        Raises:
            InvalidInputError: bad shapes, NaN/inf, a single class, unseen validation labels,
                too few rows for two clusters, or an invalid parameter.
        """
        plan = self.prepare(X_train, y_train, X_val, y_val, draws=draws)
        utilities = self.train_masks(plan, np.arange(plan.n_masks))
        return self.fit_plan(plan, utilities, X_train, y_train, n_trainings=plan.n_trainings(), draws=draws)

    def prepare(
        self,
        X_train: ArrayLike,
        y_train: ArrayLike,
        X_val: ArrayLike,
        y_val: ArrayLike,
        *,
        draws: ArrayLike | None = None,
    ) -> TrainingPlan:
        """Stage 0 and the plan of the stage 1-2 trainings (no model is trained).

        Fits the feature space and the clusters on the clustering sample (every row when n <=
        ``max_reference_rows``), assigns every row, draws the reference set, the
        cluster-stratified training sample and the stratified halves.

        Raises:
            InvalidInputError: as :meth:`fit`.
        """
        self._check_params()
        data = check_training_data(X_train, y_train, X_val, y_val)
        X, y = data.X_train, data.y_train
        u = self._draws(X.shape[0], draws)
        sample = smallest_draws(u, self.max_reference_rows)
        try:
            space, model = self.fit_clusters(X if sample.size == X.shape[0] else X[sample])
        except InvalidInputError as e:
            if sample.size == X.shape[0]:
                raise
            raise InvalidInputError(
                f"{e}: they are the clustering sample of max_reference_rows = {self.max_reference_rows} of the "
                f"{X.shape[0]} rows; raise max_reference_rows (--reference-rows)"
            ) from e
        clusters = model.assign(space.cluster_space(X))
        counts = stratum_counts(clusters, y, model.n_clusters, data.n_classes)
        thresholds = select_reference(u, clusters, y, quotas(counts, self.max_reference_rows))
        ref = np.flatnonzero(reference_mask(u, clusters, y, thresholds))
        return self.plan_reference(
            space,
            model,
            X[ref],
            y[ref],
            clusters[ref],
            u[ref],
            sizes=counts.sum(axis=1),
            X_val=data.X_val,
            y_val=data.y_val,
            classes=data.classes,
        )

    def fit_clusters(self, X_sample: NDArray[np.float64]) -> tuple[FeatureSpace, ClusterModel]:
        """Stage 0 on the clustering sample: the feature space and the cluster model.

        ``p`` comes from ``n_clusters`` or ``budget``, capped by the sample's rows.

        Raises:
            InvalidInputError: the rows form a single cluster.
        """
        self._check_params()
        n = X_sample.shape[0]
        space = FeatureSpace.fit(X_sample, max_dims=self.pca_dims)
        Z = space.cluster_space(X_sample)
        p = choose_n_clusters(
            n,
            n_clusters=self.n_clusters,
            budget=self.budget,
            pairwise=self.pairwise,
            seeds=self.seeds,
            min_cluster_frac=self.min_cluster_frac,
        )
        clusterer = KMeansClusterer() if self.clusterer is None else self.clusterer
        first = clusterer.fit_predict(Z, p, self.seed)
        model, _ = ClusterModel.from_labels(Z, first, min_size=min_cluster_size(n, self.min_cluster_frac))
        if model.n_clusters < 2:
            raise InvalidInputError(f"the {n} training rows form a single cluster; 2 are needed")
        return space, model

    def plan_reference(
        self,
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
            space: the feature space of :meth:`fit_clusters`.
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
        rows = stratified_sample(clusters_ref, self.max_train_rows, np.random.default_rng(self.seed))
        cs = clusters_ref[rows]
        return TrainingPlan(
            X=space.standardise(X_ref[rows]),
            y=y_ref[rows],
            sample_clusters=cs,
            halves=np.stack([stratified_half(cs, np.random.default_rng([self.seed, s])) for s in range(self.seeds)]),
            X_val=space.standardise(X_val),
            y_val=y_val,
            empty=prior_utility(y_ref[rows], y_val, classes.size, self.utility),
            classes=classes,
            space=space,
            model=model,
            Z_reference=space.cluster_space(X_ref),
            reference_y=y_ref,
            reference_clusters=clusters_ref,
            reference_draws=draws_ref,
            sizes=np.asarray(sizes, dtype=np.int64),
            sample=rows,
            pairwise=self.pairwise,
            seed=self.seed,
        )

    def train_masks(self, plan: TrainingPlan, indices: ArrayLike) -> NDArray[np.float64]:
        """Run the trainings of masks ``indices`` of ``plan`` (one shard); average over seeds.

        Returns:
            ``(len(indices), m)`` per-example validation utilities ``u_j(S)``; an empty mask
            gets the prior's utility without training.
        """
        self._check_params()
        index = np.asarray(indices, dtype=np.intp)
        if index.size and (index.min() < 0 or index.max() >= plan.n_masks):
            raise InvalidInputError(f"mask indices must be in [0, {plan.n_masks}); found {index.tolist()}")
        learner = learner_from_name(self.learner, self.device)
        total = np.zeros((index.size, plan.y_val.size))
        for s in range(plan.seeds):
            masks = plan.masks(s, index)
            trained = masks.any(axis=1)
            u = np.tile(plan.empty, (index.size, 1))
            if trained.any():
                proba = learner.predict_proba_masked(
                    plan.X, plan.y, masks[trained], plan.X_val, n_classes=plan.classes.size, seed=plan.seed + s
                )
                u[trained] = per_example_utility(proba, plan.y_val, self.utility)
            total += u
        return total / plan.seeds

    def fit_plan(
        self,
        plan: TrainingPlan,
        utilities: ArrayLike,
        X_train: ArrayLike,
        y_train: ArrayLike,
        *,
        n_trainings: int,
        draws: ArrayLike | None = None,
    ) -> EcoVal:
        """Fit the production function and value every training row from a plan's training utilities.

        :meth:`fit_reference`; when the reference set is a sample, every training row is
        valued by :meth:`value_rows` (a member leaves itself out, so its value is its in-sample
        one) and the values are centred over all of them (:meth:`centre`).

        Args:
            plan: the plan of :meth:`prepare` on the same training rows.
            utilities: ``(n_masks, m)`` utilities of every mask, in mask order.
            X_train: ``(n, d)`` the training embeddings given to :meth:`prepare`.
            y_train: ``(n,)`` their labels.
            n_trainings: models fitted for ``utilities`` (for ``n_trainings_``).
            draws: the draws given to :meth:`prepare`.

        Returns:
            self, fitted.
        """
        X = check_features(X_train, "X_train")
        encode_labels(check_labels(y_train, "y_train", n_rows=X.shape[0]), plan.classes, "y_train")
        if X.shape[0] != plan.n_rows:
            raise InvalidInputError(f"X_train has {X.shape[0]} rows; the plan was made for {plan.n_rows}")
        self.fit_reference(plan, utilities, n_trainings=n_trainings)
        if not plan.sampled:
            return self
        member = member_index(self.member_draws_, self._draws(X.shape[0], draws))
        rows = self.value_rows(X, y_train, train_index=member)
        self.centre(np.bincount(np.asarray(rows.clusters), weights=rows.x, minlength=self.n_clusters_))
        self._set_result(
            replace(
                rows,
                values=self.state_.values(rows.x, np.asarray(rows.clusters)),
                mode="in_sample",
                n_trainings=n_trainings,
            ),
            members=np.flatnonzero(member >= 0),
        )
        return self

    def fit_reference(self, plan: TrainingPlan, utilities: ArrayLike, *, n_trainings: int) -> EcoVal:
        """Fit the production function and the state on the plan's reference rows; value them in sample.

        When the reference set is every training row this is the whole fit; otherwise
        ``x_mean`` is the members' until :meth:`centre`, and ``result_`` holds the members.
        """
        leave_out = plan.leave_out_utilities(np.asarray(utilities, dtype=np.float64))
        self._check_params()
        production = SecondOrderProduction(shrinkage=self.shrinkage) if self.production is None else self.production
        game = production.fit(leave_out)
        self.utilities_ = leave_out
        propagator = (
            NeighbourPropagator(
                k_neighbors=self.k_neighbors,
                vote_neighbors=self.vote_neighbors,
                halo_clusters=self.halo_clusters,
                prior_weight=self.prior_weight,
                c_kappa=self.c_kappa,
                empirical_bayes=self.empirical_bayes,
                seed=self.seed,
            )
            if self.propagator is None
            else self.propagator
        )
        clusters = plan.reference_clusters
        state, inputs = propagator.fit(plan.Z_reference, plan.reference_y, clusters, game, sizes=plan.sizes)
        self._set_fitted(
            classes=plan.classes,
            space=plan.space,
            model=plan.model,
            game=game,
            state=state,
            result=ValuationResult(
                values=state.values(inputs.x, clusters),
                intrinsic=inputs.alpha,
                extrinsic=inputs.beta,
                clusters=clusters,
                cluster_values=game.phi[clusters],
                mode="in_sample",
                n_trainings=n_trainings,
                suggested_label=plan.classes[inputs.support],
                label_confidence=inputs.support_share,
            ),
            member_draws=plan.reference_draws,
            n_trainings=n_trainings,
        )
        return self

    def centre(self, x_sum: ArrayLike) -> EcoVal:
        """Centre the values on ``mean_{j in c} x_j = x_sum_c / n_c``, summed over every training row.

        A distributed engine sums ``x_i = alpha_i beta_i`` of every training row per cluster
        (from :meth:`value_rows`, members leaving themselves out) and passes the sums here, so
        that ``sum_{i in c} v_i = n_c share_c*`` over all rows (invariant 1, spec section 5b).

        Returns:
            self, with the state and ``result_`` recentred.
        """
        self._check_fitted()
        sums = np.asarray(x_sum, dtype=np.float64)
        if sums.shape != (self.n_clusters_,):
            raise InvalidInputError(f"x_sum has shape {sums.shape}; expected ({self.n_clusters_},)")
        self.state_ = self.state_.centred(sums)
        rows = self.result_
        self._set_result(
            replace(rows, values=self.state_.values(rows.x, np.asarray(rows.clusters))),
            members=self.members_,
        )
        return self

    def value(self, X_new: ArrayLike, y_new: ArrayLike, *, train_index: ArrayLike | None = None) -> NDArray[np.float64]:
        """Out-of-sample values of labelled rows, without retraining (spec section 5).

        Args:
            X_new: ``(m, d)`` embeddings.
            y_new: ``(m,)`` labels seen in training.
            train_index: ``(m,)`` index of each row in the training set, to leave it out of its
                own neighbours (then its value equals its in-sample value), or -1 for a new row.
                Default: all rows are new.

        Returns:
            ``(m,)`` values.
        """
        return self.value_rows(X_new, y_new, train_index=train_index).values

    def value_rows(
        self, X_new: ArrayLike, y_new: ArrayLike, *, train_index: ArrayLike | None = None
    ) -> ValuationResult:
        """Like :meth:`value`, with ``alpha``, ``beta``, cluster and ``phi`` of every row."""
        self._check_fitted()
        X = check_features(X_new, "X_new", n_features=self.n_features_in_)
        y = encode_labels(check_labels(y_new, "y_new", n_rows=X.shape[0]), self.classes_, "y_new")
        exclude = None
        if train_index is not None:
            exclude = np.asarray(train_index, dtype=np.int64)
            if exclude.shape != (X.shape[0],):
                raise InvalidInputError(f"train_index has shape {exclude.shape}; expected ({X.shape[0]},)")
        Z = self.feature_space_.cluster_space(X)
        clusters = self.cluster_model_.assign(Z)
        inputs = self.state_.inputs(Z, y, clusters, exclude=exclude)
        return ValuationResult(
            values=self.state_.values(inputs.x, clusters),
            intrinsic=inputs.alpha,
            extrinsic=inputs.beta,
            clusters=clusters,
            cluster_values=self.game_.phi[clusters],
            mode="out_of_sample",
            n_trainings=0,
            suggested_label=self.classes_[inputs.support],
            label_confidence=inputs.support_share,
        )

    def assigner(self) -> ClusterAssigner:
        """The rule that assigns rows to the fitted clusters (O(p d), shipped to where rows lie)."""
        self._check_fitted()
        return ClusterAssigner(self.feature_space_, self.cluster_model_)

    def training_shares(self) -> NDArray[np.float64]:
        """``(p,)`` each cluster's share of the training rows, ``n_c / n``."""
        self._check_fitted()
        sizes = np.asarray(self.state_.sizes, dtype=np.float64)
        shares: NDArray[np.float64] = sizes / sizes.sum()
        return shares

    def save(self, path: str | Path) -> Path:
        """Write the fitted state to the folder ``path`` as ``state.npz`` and ``ecoval.json``.

        Only arrays and JSON are written (no pickle), so a saved state from an untrusted place
        loads no code. A learner given as an object is recorded by its class name.
        """
        self._check_fitted()
        game, state = self.game_, self.state_
        arrays = fitted_arrays(
            self.classes_,
            self.feature_space_,
            self.cluster_model_,
            game,
            state,
            self.result_.take(self.members_),
            self.member_draws_,
        )
        params = self._params()
        if not isinstance(params["learner"], str):
            params["learner"] = type(params["learner"]).__qualname__
        for part in ("clusterer", "production", "propagator"):
            value = params[part]
            params[part] = None if value is None else type(value).__qualname__
        meta = {
            "format_version": _FORMAT_VERSION,
            "params": params,
            "game": {k: v for k, v in asdict(game).items() if not isinstance(v, np.ndarray)},
            "state": {"kappa": state.kappa, "gamma": state.gamma, "prior_weight": state.prior_weight},
            "n_trainings": self.n_trainings_,
            "n_features_in": self.n_features_in_,
        }
        return write_saved(Path(path), _STATE_FILE, arrays, _META_FILE, meta)

    @classmethod
    def load(cls, path: str | Path) -> EcoVal:
        """Read a state written by :meth:`save`; arrays load with ``allow_pickle=False``.

        Raises:
            StateFormatError: the state was written in another format (an older method).
            InvalidInputError: the folder holds no state.
        """
        folder = Path(path)
        meta, arrays = read_saved(folder, _STATE_FILE, _META_FILE, "EcoVal state")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise StateFormatError(
                f"{folder} has state format {meta.get('format_version')}; this version reads {_FORMAT_VERSION}"
            )
        params = dict(meta["params"])
        # The fitted state values rows on its own; composed parts are recorded by name only.
        params.update(clusterer=None, production=None, propagator=None)
        est = cls(**params)
        est._set_fitted(**fitted_from_arrays(arrays, meta), n_trainings=int(meta["n_trainings"]))
        return est

    def _draws(self, n: int, draws: ArrayLike | None) -> NDArray[np.int64]:
        """``u_i`` of ``n`` training rows: ``draws`` when given, else drawn from the seed."""
        if draws is None:
            return seeded_draws(n, self.seed)
        u = np.asarray(draws)
        if u.shape != (n,) or not np.issubdtype(u.dtype, np.integer):
            raise InvalidInputError(f"draws must be ({n},) integers; found {u.dtype} of shape {u.shape}")
        return u.astype(np.int64)

    def _params(self) -> dict[str, Any]:
        """Every ``__init__`` argument by name, as stored (scikit-learn's ``get_params``)."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def _check_params(self) -> None:
        check_params(type(self).__name__, self._params())

    def _set_fitted(
        self,
        *,
        classes: NDArray[Any],
        space: FeatureSpace,
        model: ClusterModel,
        game: ClusterGame,
        state: PropagationState,
        result: ValuationResult,
        member_draws: NDArray[np.int64],
        n_trainings: int,
    ) -> None:
        self.classes_ = classes
        self.feature_space_ = space
        self.cluster_model_ = model
        self.game_ = game
        self.state_ = state
        self.member_draws_ = np.asarray(member_draws, dtype=np.int64)
        self._set_result(result, members=np.arange(len(result)))
        self.cluster_values_ = game.phi
        self.gamma_alpha_ = game.gamma_alpha
        self.gamma_beta_ = game.gamma_beta
        self.returns_to_scale_ = game.returns_to_scale
        self.n_trainings_ = n_trainings
        self.n_clusters_: int = model.n_clusters
        self.n_features_in_ = int(space.mean.shape[0])

    def _set_result(self, result: ValuationResult, *, members: NDArray[np.intp]) -> None:
        self.result_ = result
        self.members_ = members
        self.values_ = result.values
        self.intrinsic_ = np.asarray(result.intrinsic, dtype=np.float64)
        self.extrinsic_ = np.asarray(result.extrinsic, dtype=np.float64)
        self.clusters_ = np.asarray(result.clusters, dtype=np.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise NotFittedError("this EcoVal is not fitted yet; call fit(X_train, y_train, X_val, y_val) first")
