r"""The masked trainings of one fit (stages 1 and 2), as a self-contained, shardable plan.

A :class:`TrainingPlan` holds everything the trainings need (the standardised cluster-stratified
sample, its clusters, the stratified halves, the validation rows) and everything the later
stages need from stage 0 (feature space, cluster model, the reference set and the size of every
cluster, :mod:`ecoval_ops.valuation.reference`), so the
trainings can run as separate tasks (an Airflow shard per group of masks, each on its own GPU)
and the production function can be fitted from their saved utilities.

Masks in order, per seed: all rows B, a cluster-stratified half H, ``B \ C_c`` for each c, then
``B \ (C_c ∪ C_d)`` for c < d. An empty mask (only ``B \ (C_0 ∪ C_1)`` at p = 2) is the prior
and is not trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation._saved import read_saved, stage0_arrays, stage0_from_arrays, write_saved
from ecoval_ops.valuation.clustering import ClusterModel, FeatureSpace
from ecoval_ops.valuation.production import LeaveOutUtilities

__all__ = ["TrainingPlan", "stratified_half", "stratified_sample"]

_ARRAYS = "plan.npz"
_META = "plan.json"
_SAVED_ARRAYS = (
    "X",
    "y",
    "sample_clusters",
    "halves",
    "X_val",
    "y_val",
    "empty",
    "classes",
    "Z_reference",
    "reference_y",
    "reference_clusters",
    "reference_draws",
    "sizes",
    "sample",
)
"""The plan's array attributes, saved under their own names beside the stage-0 arrays."""


@dataclass(frozen=True)
class TrainingPlan:
    """The stage 1-2 trainings of one fit and the stage-0 state they rest on.

    Attributes:
        X: ``(n_s, d)`` standardised training sample.
        y: ``(n_s,)`` its class codes.
        sample_clusters: ``(n_s,)`` its cluster ids.
        halves: ``(seeds, n_s)`` the stratified half H of each seed.
        X_val: ``(m, d)`` standardised validation rows.
        y_val: ``(m,)`` their class codes.
        empty: ``(m,)`` ``u_j(empty)``, the class-prior utility.
        classes: ``(K,)`` training labels.
        space: the fitted feature space.
        model: the fitted cluster model.
        Z_reference: ``(R, q)`` the reference rows in the cluster space (the state's members).
        reference_y: ``(R,)`` their class codes.
        reference_clusters: ``(R,)`` their clusters.
        reference_draws: ``(R,)`` their draws ``u_i``.
        sizes: ``(p,)`` ``n_c``, every training row of each cluster.
        sample: ``(n_s,)`` the training sample's positions in the reference set.
        pairwise: whether the pairwise stage runs.
        seed: the fit's seed (the learner of seed s uses ``seed + s``).
    """

    X: NDArray[np.float64]
    y: NDArray[np.int64]
    sample_clusters: NDArray[np.int64]
    halves: NDArray[np.bool_]
    X_val: NDArray[np.float64]
    y_val: NDArray[np.int64]
    empty: NDArray[np.float64]
    classes: NDArray[Any]
    space: FeatureSpace
    model: ClusterModel
    Z_reference: NDArray[np.float64]
    reference_y: NDArray[np.int64]
    reference_clusters: NDArray[np.int64]
    reference_draws: NDArray[np.int64]
    sizes: NDArray[np.int64]
    sample: NDArray[np.intp]
    pairwise: bool
    seed: int

    @property
    def n_rows(self) -> int:
        """Training rows, n."""
        return int(self.sizes.sum())

    @property
    def sampled(self) -> bool:
        """Whether the reference set is a sample of the training rows (n > R)."""
        return self.reference_y.size < self.n_rows

    @property
    def p(self) -> int:
        """Number of clusters."""
        return self.model.n_clusters

    @property
    def seeds(self) -> int:
        """Repeated trainings per mask."""
        return int(self.halves.shape[0])

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The cluster pairs ``(c, d)``, ``c < d``, of the pairwise stage, in mask order."""
        p = self.p
        return [(c, d) for c in range(p) for d in range(c + 1, p)] if self.pairwise else []

    @property
    def n_masks(self) -> int:
        """Masks per seed: ``2 + p + p(p-1)/2`` (``2 + p`` without the pairwise stage)."""
        return 2 + self.p + len(self.pairs)

    def left_out(self, index: int) -> str:
        """What mask ``index`` leaves out: ``none``, ``half``, ``"c"`` or ``"c,d"``."""
        if index == 0:
            return "none"
        if index == 1:
            return "half"
        if index < 2 + self.p:
            return str(index - 2)
        c, d = self.pairs[index - 2 - self.p]
        return f"{c},{d}"

    def masks(self, seed_index: int, indices: NDArray[np.intp]) -> NDArray[np.bool_]:
        """``(len(indices), n_s)`` training-row masks of seed ``seed_index``."""
        cs = self.sample_clusters
        out = np.ones((len(indices), cs.size), dtype=bool)
        for row, i in enumerate(indices):
            if i == 1:
                out[row] = self.halves[seed_index]
            elif 2 <= i < 2 + self.p:
                out[row] = cs != i - 2
            elif i >= 2 + self.p:
                c, d = self.pairs[i - 2 - self.p]
                out[row] = (cs != c) & (cs != d)
        return out

    def shards(self, n_shards: int) -> list[list[int]]:
        """The mask indices split into at most ``n_shards`` contiguous groups of similar size."""
        if n_shards < 1:
            raise InvalidInputError(f"shards must be >= 1; found {n_shards}")
        return [part.tolist() for part in np.array_split(np.arange(self.n_masks), min(n_shards, self.n_masks))]

    def n_trainings(self, shards: int = 1) -> int:
        """Models fitted: every non-empty mask per seed, plus each extra shard's warm-start fit of B.

        The batched learners fit the full-data model first and warm-start the masked ones from
        it, so a shard without mask 0 fits B once more.
        """
        trained = int(self.masks(0, np.arange(self.n_masks)).any(axis=1).sum())
        return (trained + max(0, shards - 1)) * self.seeds

    def leave_out_utilities(self, utilities: NDArray[np.float64]) -> LeaveOutUtilities:
        """Arrange ``(n_masks, m)`` seed-averaged utilities of all masks as :class:`LeaveOutUtilities`."""
        if utilities.shape != (self.n_masks, self.y_val.size):
            raise InvalidInputError(
                f"utilities have shape {utilities.shape}; expected ({self.n_masks}, {self.y_val.size})"
            )
        p = self.p
        pair = None
        if self.pairwise:
            pair = np.zeros((p, p, self.y_val.size))
            for r, (c, d) in enumerate(self.pairs):
                pair[c, d] = pair[d, c] = utilities[2 + p + r]
        return LeaveOutUtilities(
            full=utilities[0], half=utilities[1], empty=self.empty, lco=utilities[2 : 2 + p], pair=pair
        )

    def save(self, path: str | Path) -> Path:
        """Write the plan to the folder ``path`` as arrays and JSON (no pickle)."""
        arrays = {name: getattr(self, name) for name in _SAVED_ARRAYS} | stage0_arrays(self.space, self.model)
        return write_saved(Path(path), _ARRAYS, arrays, _META, {"pairwise": self.pairwise, "seed": self.seed})

    @classmethod
    def load(cls, path: str | Path) -> TrainingPlan:
        """Read a plan written by :meth:`save`; arrays load with ``allow_pickle=False``."""
        meta, a = read_saved(Path(path), _ARRAYS, _META, "training plan")
        space, model = stage0_from_arrays(a)
        return cls(
            **{name: a[name] for name in _SAVED_ARRAYS},
            space=space,
            model=model,
            pairwise=bool(meta["pairwise"]),
            seed=int(meta["seed"]),
        )


def stratified_sample(clusters: NDArray[np.int64], limit: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """Row indices of at most ``limit`` rows keeping each cluster's share (all rows if fewer)."""
    n = clusters.shape[0]
    if n <= limit:
        return np.arange(n)
    picked = []
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        take = max(1, round(limit * members.size / n))
        picked.append(rng.choice(members, size=min(take, members.size), replace=False))
    return np.sort(np.concatenate(picked))


def stratified_half(clusters: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.bool_]:
    """A random half of each cluster (the diagonal point t = 1/2 of the production function)."""
    half = np.zeros(clusters.shape[0], dtype=bool)
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        half[rng.permutation(members)[: (members.size + 1) // 2]] = True
    return half
