"""The EcoVal estimator: stages 0-3 and out-of-sample valuation (the whole method spec).

``fit`` clusters the rows (stage 0), runs ``(2 + p + p(p-1)/2) * seeds`` masked trainings (stages
1 and 2), fits the production function (section 3) and propagates cluster values to rows
(section 4); ``value`` values new rows without retraining (section 5). ``fit`` is ``prepare``,
``train_masks`` per shard and ``fit_plan``, which can run apart (the Airflow tasks). At lakehouse
scale (section 5b) an engine runs the O(n) passes itself around :mod:`.stages`,
:meth:`fit_reference` and :meth:`centre`, valuing rows with ``model_`` on its executors.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge, Lt
from numpy.typing import ArrayLike, NDArray

from ecoval_ops.exceptions import InvalidInputError, NotFittedError
from ecoval_ops.valuation import stages
from ecoval_ops.valuation._inputs import check_features, check_labels, encode_labels
from ecoval_ops.valuation.learners import LearnerName, trains_torch
from ecoval_ops.valuation.model import ValuationModel
from ecoval_ops.valuation.neighbours import NeighbourSearch
from ecoval_ops.valuation.params import Count, Parameters, Positive, Weight
from ecoval_ops.valuation.plan import TrainingPlan
from ecoval_ops.valuation.protocols import Classifier, Clusterer, Learner, ProductionFunction, Propagator
from ecoval_ops.valuation.result import ValuationResult
from ecoval_ops.valuation.threads import cpu_threads
from ecoval_ops.valuation.trainer import DeviceName
from ecoval_ops.valuation.utility import UtilityName

__all__ = ["EcoVal"]


class EcoVal(Parameters):
    """EcoVal data valuation (Tarun et al., KDD 2024), as defined in the method spec.

    Each argument's type and bounds are its annotation, checked at the start of ``prepare`` and
    ``fit`` (:func:`~ecoval_ops.valuation.params.check_params`); its default is the signature's.
    Those of a plain type are the run settings of ``ecoval run`` (:mod:`ecoval_ops.config`), with
    the text below as their help.

    Args:
        n_clusters: p; ``None`` takes the largest p whose trainings fit ``budget``.
        budget: most model fits R, used when ``n_clusters`` is None; ``None`` means 80 (p = 12 with
            the pairwise stage).
        pairwise: run the O(p^2) pairwise leave-out stage.
        utility: ``"log_likelihood"`` (clipped log-probability of the true label) or
            ``"accuracy"``.
        learner: ``"logistic"`` (batched softmax regression), ``"mlp"`` (batched one-hidden-layer
            MLP), ``"trees"`` (gradient boosted trees, for tabular rows a linear model fits
            poorly), a scikit-learn classifier (trained one model at a time) or an object with
            ``predict_proba_masked``.
        k_neighbors: within-cluster neighbours of the redundancy ``rho``, k.
        vote_neighbors: neighbours of the intrinsic label vote.
        halo_clusters: nearest other clusters whose members join the neighbours.
        prior_weight: ``m0``, the leave-cluster-out label prior in pseudo-neighbours.
        c_kappa: ``kappa = c_kappa |mu|`` weighs a row's effective input against its cluster's
            mean.
        seeds: repeated trainings averaged with common random numbers.
        seed: seeds k-means, the hold-out split, the half split, sampling and the learner.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the torch learners.
        max_train_rows: trainings run on a cluster-stratified sample of at most this many
            reference rows.
        max_reference_rows: R, the most training rows that clustering, trainings and neighbours
            rest on (spec section 5b); beyond it a sample stratified by cluster and label, and
            every other row is valued against it.
        min_cluster_frac: smallest cluster as a share of the rows (at least 2 rows).
        pca_dims: embeddings wider than this are clustered in this many PCA dimensions.
        clusterer: a :class:`~ecoval_ops.valuation.protocols.Clusterer`; ``None`` = k-means.
        production: a :class:`~ecoval_ops.valuation.protocols.ProductionFunction` (section 3);
            ``None`` = :class:`SecondOrderProduction` with ``shrinkage``.
        propagator: a :class:`~ecoval_ops.valuation.protocols.Propagator` (section 4); ``None`` =
            :class:`NeighbourPropagator` with ``k_neighbors``, ``vote_neighbors``, ``halo_clusters``,
            ``prior_weight``, ``c_kappa``, ``empirical_bayes`` and ``neighbour_search``.
        shrinkage: James-Stein shrinkage of ``V_c`` and ``I_cd``.
        empirical_bayes: empirical-Bayes shrinkage of cluster shares.
        neighbour_search: the nearest-member search of the row values: ``"exact"``, ``"approx"``
            (an HNSW graph per cluster) or ``"auto"`` (exact below 50,000 candidates per cluster;
            :mod:`~ecoval_ops.valuation.neighbours`).
        threads: CPU threads of the fit and of valuing rows (BLAS, OpenMP, torch, the clusters
            side by side); ``None`` = every core. Give each of N valuations on one host (runs, or
            shard tasks side by side) its cores / N (:mod:`~ecoval_ops.valuation.threads`).

    Attributes:
        values_: ``(n,)`` row values ``v_i``.
        intrinsic_: ``(n,)`` ``alpha_i``.
        extrinsic_: ``(n,)`` ``beta_i``.
        clusters_: ``(n,)`` cluster id per row.
        members_: positions in ``result_`` of the state's members (the reference rows); after
            :meth:`load`, ``result_`` holds the members only.
        cluster_values_: ``(p,)`` ``phi_c``.
        gamma_alpha_: ``Gamma_alpha``.
        gamma_beta_: ``Gamma_beta*``.
        returns_to_scale_: ``gamma``.
        n_trainings_: model trainings actually run.
        n_clusters_: p after capping and merging.
        classes_: ``(K,)`` training labels.
        result_: the in-sample :class:`ValuationResult`.
        model_: the fitted :class:`~ecoval_ops.valuation.model.ValuationModel`, the public surface
            that values rows (what the engines, monitoring and explain call).
    """

    model_: ValuationModel
    """Declared here because :meth:`centre` replaces it (set by the fit)."""

    def __init__(
        self,
        *,
        n_clusters: Annotated[int, Ge(2)] | None = None,
        budget: Positive | None = None,
        pairwise: bool = True,
        utility: UtilityName = "log_likelihood",
        learner: LearnerName | Learner | Classifier = "logistic",
        k_neighbors: Positive = 10,
        vote_neighbors: Positive = 20,
        halo_clusters: Count = 0,
        prior_weight: Weight = 20.0,
        c_kappa: Weight = 20.0,
        seeds: Positive = 1,
        seed: int = 0,
        device: DeviceName = "auto",
        max_train_rows: Positive = 100_000,
        max_reference_rows: Annotated[int, Ge(4)] = 200_000,
        min_cluster_frac: Annotated[float, Ge(0), Lt(0.5)] = 0.01,
        pca_dims: Positive = 64,
        clusterer: Clusterer | None = None,
        production: ProductionFunction | None = None,
        propagator: Propagator | None = None,
        shrinkage: bool = True,
        empirical_bayes: bool = True,
        neighbour_search: NeighbourSearch = "auto",
        threads: Positive | None = None,
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
        self.neighbour_search = neighbour_search
        self.threads = threads

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
        self.check_params()
        with cpu_threads(self.threads):
            return stages.prepare(self, X_train, y_train, X_val, y_val, draws=draws)

    def train_masks(self, plan: TrainingPlan, indices: ArrayLike) -> NDArray[np.float64]:
        """Utilities of the trainings of masks ``indices`` (:func:`~ecoval_ops.valuation.stages.train_masks`)."""
        self.check_params()
        with cpu_threads(self.threads, trains_torch=trains_torch(self.learner)):
            return stages.train_masks(self, plan, indices)

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
        member = self.model_.member_positions(stages.draws_of(self, X.shape[0], draws))
        rows = self.value_rows(X, y_train, train_index=member)
        # Centred on every row's x; the members' in-sample values then come from the rows valued here.
        self.model_ = self.model_.centred(
            np.bincount(np.asarray(rows.clusters), weights=rows.x, minlength=self.n_clusters_)
        )
        in_sample = replace(self.model_.revalued(rows), mode="in_sample", n_trainings=n_trainings)
        self._set_result(in_sample, members=np.flatnonzero(member >= 0))
        self.model_ = self.model_.with_members(in_sample.take(self.members_))
        return self

    def fit_reference(self, plan: TrainingPlan, utilities: ArrayLike, *, n_trainings: int) -> EcoVal:
        """Fit the model on the plan's reference rows and value them in sample.

        See :func:`~ecoval_ops.valuation.stages.fit_model`. When the reference set is every training
        row this is the whole fit; otherwise ``x_mean`` is the members' until :meth:`centre`, and
        ``result_`` holds the members.
        """
        self.check_params()
        with cpu_threads(self.threads):
            model, members = stages.fit_model(self, plan, utilities, n_trainings=n_trainings)
        self._set_fitted(model, members)
        return self

    def centre(self, x_sum: ArrayLike) -> EcoVal:
        """Centre the values on ``mean_{j in c} x_j = x_sum_c / n_c``, summed over every training row.

        See :meth:`ValuationModel.centred` (invariant 1, spec section 5b).

        Returns:
            self, with the model and ``result_`` recentred.
        """
        self._check_fitted()
        self.model_ = self.model_.centred(x_sum)
        self._set_result(self.model_.revalued(self.result_), members=self.members_)
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
        with cpu_threads(self.threads):
            return self.model_.value_rows(X_new, y_new, train_index=train_index)

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to the folder ``path`` as ``state.npz`` and ``ecoval.json``.

        Only arrays and JSON are written (no pickle), so a saved state from an untrusted place
        loads no code. A learner or part given as an object is recorded by its class name.
        """
        self._check_fitted()
        params = self.get_params()
        if not isinstance(params["learner"], str):
            params["learner"] = type(params["learner"]).__qualname__
        for part in ("clusterer", "production", "propagator"):
            value = params[part]
            params[part] = None if value is None else type(value).__qualname__
        return self.model_.save(path, params)

    @classmethod
    def load(cls, path: str | Path, *, per_cluster: bool = False) -> EcoVal:
        """Read a model written by :meth:`save` (:meth:`ValuationModel.load`, which says what ``per_cluster`` does).

        Raises:
            StateFormatError: the state was written in another format (an older method).
            InvalidInputError: the folder holds no state.
        """
        model, params = ValuationModel.load(path, per_cluster=per_cluster)
        # The fitted model values rows on its own; composed parts are recorded by name only.
        params.update(clusterer=None, production=None, propagator=None)
        est = cls(**params)
        est._set_fitted(model, model.members)
        return est

    def _set_fitted(self, model: ValuationModel, members: ValuationResult) -> None:
        self.model_ = model
        game = model.game
        self.classes_ = model.classes
        self._set_result(members, members=np.arange(len(members)))
        self.cluster_values_ = game.phi
        self.gamma_alpha_ = game.gamma_alpha
        self.gamma_beta_ = game.gamma_beta
        self.returns_to_scale_ = game.returns_to_scale
        self.n_trainings_ = model.n_trainings
        self.n_clusters_: int = model.n_clusters
        self.n_features_in_ = model.n_features_in

    def _set_result(self, result: ValuationResult, *, members: NDArray[np.intp]) -> None:
        self.result_ = result
        self.members_ = members
        self.values_ = result.values
        self.intrinsic_ = np.asarray(result.intrinsic, dtype=np.float64)
        self.extrinsic_ = np.asarray(result.extrinsic, dtype=np.float64)
        self.clusters_ = np.asarray(result.clusters, dtype=np.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this EcoVal is not fitted yet; call fit(X_train, y_train, X_val, y_val) first")
