"""The fitted valuation model: what values rows without retraining (spec sections 4, 5 and 5b).

:class:`ValuationModel` is the public surface of a fitted :class:`~ecoval_ops.valuation.EcoVal`
(its ``model_``): the engines, the refit policy, monitoring, the review and ``ecoval explain`` call
its methods and never the parts it is made of. It saves as arrays and JSON (no pickle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecoval_ops.exceptions import InvalidInputError, StateFormatError
from ecoval_ops.valuation._inputs import check_features, check_labels, encode_labels
from ecoval_ops.valuation._saved import fitted_arrays, fitted_from_arrays, read_saved, write_saved
from ecoval_ops.valuation.clustering import ClusterAssigner, ClusterModel, FeatureSpace
from ecoval_ops.valuation.production import ClusterGame
from ecoval_ops.valuation.propagation_state import kernel
from ecoval_ops.valuation.protocols import FittedState
from ecoval_ops.valuation.reference import member_index
from ecoval_ops.valuation.result import ValuationResult

__all__ = ["Evidence", "ValuationModel"]

FORMAT_VERSION = 4
"""2: the label vote's halo, supervised metric and leave-cluster-out prior joined the state.
3: the members are the reference set; ``n_c`` and the members' draws joined the state."""
_STATE_FILE = "state.npz"
_META_FILE = "ecoval.json"
_MAPPED = ("state_Z",)
"""The arrays :meth:`ValuationModel.load` maps when asked: the members' embeddings."""


@dataclass(frozen=True)
class Evidence:
    """What one row's value rests on (``ecoval explain``).

    Attributes:
        share: ``share_c*`` of its cluster.
        kappa: ``kappa``.
        x_mean: ``mean_{j in c} x_j``.
        label_prior: ``q_iy`` of its label under the leave-cluster-out prior (0 for an unseen label).
        prior_weight: ``m0``.
        members: member indices of its vote neighbours, nearest first.
        labels: their labels.
        similarity: their kernel ``exp(-(d_ij / h'_c)^2)``.
    """

    share: float
    kappa: float
    x_mean: float
    label_prior: float
    prior_weight: float
    members: NDArray[np.int64]
    labels: NDArray[Any]
    similarity: NDArray[np.float64]


class ValuationModel:
    """A fitted EcoVal state: the feature space, the clusters, the cluster game and the row state.

    Args:
        classes: ``(K,)`` training labels.
        space: the feature space.
        clusters: the cluster model.
        game: the fitted :class:`ClusterGame` (section 3).
        state: the propagator's fitted state (section 4).
        members: the in-sample result of the members (the reference rows).
        member_draws: ``(R,)`` the members' draws ``u_i``.
        n_trainings: model trainings of the fit.
    """

    def __init__(
        self,
        *,
        classes: NDArray[Any],
        space: FeatureSpace,
        clusters: ClusterModel,
        game: ClusterGame,
        state: FittedState,
        members: ValuationResult,
        member_draws: NDArray[np.int64],
        n_trainings: int,
    ) -> None:
        self._classes = classes
        self._space = space
        self._clusters = clusters
        self._game = game
        self._state = state
        self._members = members
        self._member_draws = np.asarray(member_draws, dtype=np.int64)
        self._n_trainings = n_trainings

    @property
    def classes(self) -> NDArray[Any]:
        """``(K,)`` the training labels."""
        return self._classes

    @property
    def game(self) -> ClusterGame:
        """The fitted production function: ``phi_c``, ``Gamma_alpha``, ``Gamma_beta*``, ``gamma``."""
        return self._game

    @property
    def members(self) -> ValuationResult:
        """The members' in-sample result (the reference rows, in member order)."""
        return self._members

    @property
    def n_clusters(self) -> int:
        """The number of clusters p."""
        return self._clusters.n_clusters

    @property
    def n_features_in(self) -> int:
        """d, the embedding width."""
        return int(self._space.mean.shape[0])

    @property
    def n_trainings(self) -> int:
        """Model trainings of the fit."""
        return self._n_trainings

    def figures(self) -> dict[str, float]:
        """The fit's scalar figures.

        ``kappa``, the reference rows R, the training rows n, the clusters searched by an
        approximate index (``approx_clusters``) and, where there are any, their lowest recall@k
        measured at build (``neighbour_recall``).
        """
        state = self._state
        approx = [c for c, kind in enumerate(state.index_kinds()) if kind == "approx"]
        return {
            "kappa": float(state.kappa),
            "reference_rows": float(state.Z.shape[0]),
            "training_rows": float(self.cluster_sizes().sum()),
            "approx_clusters": float(len(approx)),
            **({"neighbour_recall": float(np.min(state.recall[approx]))} if approx else {}),
        }

    def shrinkage(self) -> tuple[float, ...]:
        """``(p,)`` the empirical-Bayes weights ``lambda_c``."""
        return tuple(float(s) for s in self._state.shrink)

    def member_embeddings(self) -> NDArray[np.float64]:
        """``(R, q)`` the members in the cluster space."""
        return np.asarray(self._state.Z)

    def assigner(self) -> ClusterAssigner:
        """The rule that assigns rows to the clusters (O(p d), shipped to where rows lie)."""
        return ClusterAssigner(self._space, self._clusters)

    def cluster_sizes(self) -> NDArray[np.int64]:
        """``(p,)`` ``n_c``, the training rows of each cluster (members or not)."""
        return np.asarray(self._state.sizes, dtype=np.int64)

    def cluster_shares(self) -> NDArray[np.float64]:
        """``(p,)`` ``share_c*``, the shrunk per-row share of ``phi_c``: each cluster's mean value."""
        return np.asarray(self._state.share, dtype=np.float64)

    def training_shares(self) -> NDArray[np.float64]:
        """``(p,)`` each cluster's share of the training rows, ``n_c / n``."""
        sizes = self.cluster_sizes().astype(np.float64)
        shares: NDArray[np.float64] = sizes / sizes.sum()
        return shares

    def member_positions(self, draws: NDArray[np.int64]) -> NDArray[np.int64]:
        """Each row's position among the members (by its draw ``u_i``), -1 for a non-member."""
        return member_index(self._member_draws, draws)

    def value_rows(
        self, X_new: ArrayLike, y_new: ArrayLike, *, train_index: ArrayLike | None = None
    ) -> ValuationResult:
        """Out-of-sample values of labelled rows with ``alpha``, ``beta``, cluster and ``phi`` (section 5).

        Args:
            X_new: ``(m, d)`` embeddings.
            y_new: ``(m,)`` labels seen in training.
            train_index: ``(m,)`` each row's member position, to leave it out of its own neighbours
                (then its value equals its in-sample value), or -1 for a new row. Default all new.
        """
        X = check_features(X_new, "X_new", n_features=self.n_features_in)
        y = encode_labels(check_labels(y_new, "y_new", n_rows=X.shape[0]), self._classes, "y_new")
        exclude = None
        if train_index is not None:
            exclude = np.asarray(train_index, dtype=np.int64)
            if exclude.shape != (X.shape[0],):
                raise InvalidInputError(f"train_index has shape {exclude.shape}; expected ({X.shape[0]},)")
        Z = self._space.cluster_space(X)
        clusters = self._clusters.assign(Z)
        inputs = self._state.inputs(Z, y, clusters, exclude=exclude)
        assert inputs.support is not None and inputs.support_share is not None
        return self.result_of(inputs.alpha, inputs.beta, clusters, self._classes[inputs.support], inputs.support_share)

    def result_of(
        self,
        alpha: NDArray[np.float64],
        beta: NDArray[np.float64],
        clusters: NDArray[np.int64],
        suggested_label: NDArray[Any],
        label_confidence: NDArray[np.float64],
    ) -> ValuationResult:
        """The out-of-sample result of rows from their inputs: ``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)``.

        ``x_i = alpha_i beta_i``; an engine computes the inputs in one pass and the values after
        :meth:`centred`.
        """
        return ValuationResult(
            values=self._state.values(alpha * beta, clusters),
            intrinsic=alpha,
            extrinsic=beta,
            clusters=clusters,
            cluster_values=self._game.phi[clusters],
            mode="out_of_sample",
            n_trainings=0,
            suggested_label=suggested_label,
            label_confidence=label_confidence,
            n_classes=self._classes.size,
        )

    def centred(self, x_sum: ArrayLike) -> ValuationModel:
        """The model centred on ``mean_{j in c} x_j = x_sum_c / n_c``, summed over every training row.

        A distributed engine sums ``x_i = alpha_i beta_i`` of every training row per cluster
        (members leaving themselves out), so that ``sum_{i in c} v_i = n_c share_c*`` over all
        rows (invariant 1, spec section 5b).
        """
        sums = np.asarray(x_sum, dtype=np.float64)
        if sums.shape != (self.n_clusters,):
            raise InvalidInputError(f"x_sum has shape {sums.shape}; expected ({self.n_clusters},)")
        centred = self._with(state=self._state.centred(sums))
        return centred._with(members=centred.revalued(self._members))

    def with_members(self, members: ValuationResult) -> ValuationModel:
        """The model with the members' in-sample result ``members`` (valued over every training row)."""
        if len(members) != len(self._members):
            raise InvalidInputError(f"members has {len(members)} rows; the model has {len(self._members)}")
        return self._with(members=members)

    def revalued(self, rows: ValuationResult) -> ValuationResult:
        """``rows`` with ``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)`` of this model (after :meth:`centred`)."""
        return replace(rows, values=self._state.values(rows.x, np.asarray(rows.clusters)))

    def evidence(self, X_row: ArrayLike, label: Any, cluster: int, member: int, k: int | None) -> Evidence:
        """What the value of one row (``(1, d)``) of ``cluster`` rests on; ``member`` its position or -1."""
        state = self._state
        z = self._space.cluster_space(check_features(X_row, "X_row", n_features=self.n_features_in))
        dist, index = state.neighbours(z, cluster, np.array([member], dtype=np.int64))
        k = min(int(k or state.k_vote[cluster]), index.shape[1])
        code = np.flatnonzero(self._classes == label)
        return Evidence(
            share=float(state.share[cluster]),
            kappa=float(state.kappa),
            x_mean=float(state.x_mean[cluster]),
            label_prior=float(state.prior.scores(z, cluster)[0, code[0]]) if code.size else 0.0,
            prior_weight=float(state.prior_weight),
            members=index[0, :k],
            labels=self._classes[state.y[index[0, :k]]],
            similarity=kernel(dist[0, :k], float(state.h_vote[cluster])),
        )

    def save(self, path: str | Path, params: dict[str, Any]) -> Path:
        """Write the model and the estimator's ``params`` to the folder ``path`` (``state.npz``, ``ecoval.json``)."""
        game, state = self._game, self._state
        arrays = fitted_arrays(
            self._classes, self._space, self._clusters, game, state, self._members, self._member_draws
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "params": params,
            "game": {k: v for k, v in asdict(game).items() if not isinstance(v, np.ndarray)},
            "state": {"kappa": state.kappa, "gamma": state.gamma, "prior_weight": state.prior_weight},
            "n_trainings": self._n_trainings,
            "n_features_in": self.n_features_in,
        }
        return write_saved(Path(path), _STATE_FILE, arrays, _META_FILE, meta)

    @classmethod
    def load(cls, path: str | Path, *, per_cluster: bool = False) -> tuple[ValuationModel, dict[str, Any]]:
        """The model of :meth:`save` and its estimator's parameters; arrays load with ``allow_pickle=False``.

        ``per_cluster`` reads the model for a row pass whose batches come grouped by cluster: the
        members' embeddings (``O(R q)``, most of the state) are memory-mapped instead of read, so
        the pass reads only the candidates of the clusters it searches and the workers of a host
        share one copy (:func:`~ecoval_ops.valuation._saved.read_saved`), and the model holds the
        neighbour indexes of its last batch's clusters only
        (:attr:`~ecoval_ops.valuation.propagation_state.PropagationState.per_cluster`).

        Raises:
            StateFormatError: the state was written in another format (an older method).
            InvalidInputError: the folder holds no state.
        """
        folder = Path(path)
        mapped = _MAPPED if per_cluster else ()
        meta, arrays = read_saved(folder, _STATE_FILE, _META_FILE, "EcoVal state", mapped=mapped)
        if meta.get("format_version") != FORMAT_VERSION:
            raise StateFormatError(
                f"{folder} has state format {meta.get('format_version')}; this version reads {FORMAT_VERSION}"
            )
        parts = fitted_from_arrays(arrays, meta)
        model = cls(
            classes=parts["classes"],
            space=parts["space"],
            clusters=parts["model"],
            game=parts["game"],
            state=replace(parts["state"], per_cluster=True) if per_cluster else parts["state"],
            members=parts["result"],
            member_draws=parts["member_draws"],
            n_trainings=int(meta["n_trainings"]),
        )
        return model, dict(meta["params"])

    def _with(self, **parts: Any) -> ValuationModel:
        fields = {
            "classes": self._classes,
            "space": self._space,
            "clusters": self._clusters,
            "game": self._game,
            "state": self._state,
            "members": self._members,
            "member_draws": self._member_draws,
            "n_trainings": self._n_trainings,
        }
        return ValuationModel(**{**fields, **parts})
