"""The nearest-member search of stage 3 behind one small interface: exact where it is cheap, indexed where not.

A row's value needs its nearest candidates (about 17,000 members per cluster at a million rows),
so this search bounds the out-of-sample rate. Both indexes search in float32 with faiss, which
fuses the distances and the top-k selection, then re-rank their candidates in float64, so the
distances (and the ties, broken by member index: faiss keeps the first of equal distances) are
those of a float64 search:

- :class:`ExactIndex`: faiss's flat L2 search over every member, ``k + RERANK_MARGIN``
  candidates (a margin for float32's rounding at the k-th distance, one more where a row is left
  out of its own neighbours); nothing to save, it is rebuilt from the members.
- :class:`ApproxIndex`: an HNSW graph over the members (``M = HNSW_LINKS``, searched with
  ``ef = HNSW_EF``), whose recall@k is measured on a sample of the members at build
  (:attr:`ApproxIndex.recall`); saved as bytes with the fitted state.

``neighbour_search`` picks them: ``exact``, ``approx``, or ``auto``, exact below
:data:`AUTO_EXACT_MEMBERS` candidates. A graph pays only where the rows have few intrinsic
dimensions: on the scale benchmark's 64-d mixtures (``BENCHMARKS.md``, scale) HNSW needs
``ef = 128`` for values within Spearman 0.999 of the exact search's, and is then slower than it
(12.6k against 18.8k rows/s at 17,000 members, the per-cluster count of the default reference
set), so ``auto`` stays exact well beyond that count. ``approx`` is for embeddings of low
intrinsic dimension; every run logs its recall@k.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, get_args

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.threads import available_threads

__all__ = [
    "AUTO_EXACT_MEMBERS",
    "SEARCHES",
    "ApproxIndex",
    "ExactIndex",
    "NeighbourIndex",
    "NeighbourSearch",
    "build_index",
    "load_index",
    "side_by_side",
]

T = TypeVar("T")

NeighbourSearch = Literal["exact", "approx", "auto"]
SEARCHES: tuple[str, ...] = get_args(NeighbourSearch)
"""The values of ``neighbour_search``."""

AUTO_EXACT_MEMBERS = 50_000
"""``auto`` searches exactly below this many candidates (module docstring)."""

RERANK_MARGIN = 4
"""Extra float32 candidates re-ranked in float64, so that rounding cannot move the k-th neighbour."""

HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF = 128
"""The graph's links per node, its build breadth and its search breadth (recall against speed)."""

BLAS_FROM_QUERIES = 20
"""Queries per search from which faiss computes the distances as one matrix product.

faiss 1.15 sets this threshold to 128,000 queries and below it compares each query with each
member in its own loop: a cluster's 830 rows of a 10,000-row Spark batch searched 17,000 members
at 4.2k queries/s per core, against 19.4k/s as a matrix product (8,300 rows: 11.4k against
15.8k/s). 20 was faiss's threshold before."""

_SEARCH_ROWS = 8192
_RERANK_ROWS = 512
"""Queries per faiss search (its matrix products want many) and per float64 re-rank (whose
``(rows, candidates, q)`` differences stay in cache: three times faster than at 4,096 rows)."""

RECALL_SAMPLE = 500
"""Members whose approximate neighbours are compared with the exact ones at build."""


class NeighbourIndex(ABC):
    """The k nearest of a fixed set of members for batches of query rows.

    Args:
        members: ``(n, q)`` the members, in the space the distances are measured in.
    """

    kind: str
    recall: float = float("nan")
    """Recall@k against the exact search, measured at build (NaN for an exact index)."""
    _index: Any
    """The faiss index over the members in float32."""

    def __init__(self, members: NDArray[np.float64]) -> None:
        self._members = np.ascontiguousarray(members, dtype=np.float64)

    @property
    def size(self) -> int:
        """The members n."""
        return int(self._members.shape[0])

    def search(
        self, queries: NDArray[np.float64], k: int, exclude: NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Distances and member indices of the ``k`` nearest members of each query, nearest first.

        ``exclude[q]`` is a member that query q may not use (itself), or -1. Ties are broken by
        member index.
        """
        wanted = min(k + RERANK_MARGIN + (exclude is not None), self.size)
        dist = np.empty((queries.shape[0], k))
        index = np.empty((queries.shape[0], k), dtype=np.int64)
        for start in range(0, queries.shape[0], _SEARCH_ROWS):
            batch = np.ascontiguousarray(queries[start : start + _SEARCH_ROWS], dtype=np.float32)
            candidates = self._candidates(batch, wanted)
            for at in range(0, candidates.shape[0], _RERANK_ROWS):
                rows = slice(start + at, start + at + _RERANK_ROWS)
                dist[rows], index[rows] = self._rerank(
                    np.asarray(queries[rows], dtype=np.float64),
                    candidates[at : at + _RERANK_ROWS],
                    k,
                    None if exclude is None else exclude[rows],
                )
        return dist, index

    def _candidates(self, queries: NDArray[np.float32], wanted: int) -> NDArray[np.int64]:
        """``(m, wanted)`` member indices near each query, -1 where the index found fewer."""
        return np.asarray(self._index.search(queries, wanted)[1], dtype=np.int64)

    @abstractmethod
    def to_bytes(self) -> NDArray[np.uint8]:
        """What :func:`load_index` needs besides the members (empty for an exact index)."""

    def _rerank(
        self,
        queries: NDArray[np.float64],
        candidates: NDArray[np.int64],
        k: int,
        exclude: NDArray[np.int64] | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The ``k`` nearest of the candidates by float64 distance, then by member index."""
        gone = candidates < 0
        if exclude is not None:
            gone |= candidates == exclude[:, None]
        safe = np.where(gone, 0, candidates)
        diff = self._members[safe] - queries[:, None, :]
        sq = np.einsum("mkq,mkq->mk", diff, diff)
        sq[gone] = np.inf
        key = np.where(gone, np.iinfo(np.int64).max, candidates)
        order = np.lexsort((key, sq), axis=1)[:, :k]
        return np.sqrt(np.take_along_axis(sq, order, axis=1)), np.take_along_axis(candidates, order, axis=1)


class ExactIndex(NeighbourIndex):
    """Every member searched: faiss's flat L2 index in float32, re-ranked in float64."""

    kind = "exact"

    def __init__(self, members: NDArray[np.float64]) -> None:
        import faiss

        super().__init__(members)
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES
        self._index = faiss.IndexFlatL2(self._members.shape[1])
        self._index.add(self._members.astype(np.float32))

    def to_bytes(self) -> NDArray[np.uint8]:
        """Nothing: the flat index is rebuilt from the members."""
        return np.zeros(0, dtype=np.uint8)


class ApproxIndex(NeighbourIndex):
    """An HNSW graph over the members (faiss), re-ranked in float64.

    Args:
        members: the members.
        graph: a saved graph (:meth:`to_bytes`); built when None.
        recall: the recall@k measured when the graph was built.
    """

    kind = "approx"

    def __init__(
        self, members: NDArray[np.float64], graph: NDArray[np.uint8] | None = None, recall: float = float("nan")
    ) -> None:
        import faiss
        from threadpoolctl import threadpool_limits

        super().__init__(members)
        index: Any
        if graph is None:
            index = faiss.IndexHNSWFlat(self._members.shape[1], HNSW_LINKS)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            # One thread: a parallel insertion links the graph in whatever order threads reach it,
            # and the same fit must give the same graph (and values).
            with threadpool_limits(limits=1, user_api="openmp"):
                index.add(self._members.astype(np.float32))
        else:
            index = faiss.deserialize_index(graph)
        index.hnsw.efSearch = HNSW_EF
        self._index = index
        self.recall = recall

    def to_bytes(self) -> NDArray[np.uint8]:
        """The graph, serialised by faiss."""
        import faiss

        return np.asarray(faiss.serialize_index(self._index), dtype=np.uint8)

    def measure_recall(self, k: int, seed: int) -> float:
        """Recall@k against the exact search on up to :data:`RECALL_SAMPLE` members (each left out of its own)."""
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(self.size, size=min(RECALL_SAMPLE, self.size), replace=False))
        queries = self._members[sample]
        _, found = self.search(queries, k, sample)
        _, truth = ExactIndex(self._members).search(queries, k, sample)
        hits = sum(np.intersect1d(a, b).size for a, b in zip(found, truth, strict=True))
        self.recall = hits / truth.size
        return self.recall


def build_index(members: NDArray[np.float64], search: NeighbourSearch, *, k: int, seed: int) -> NeighbourIndex:
    """The index ``search`` asks for over ``members``; an approximate one measures its recall@k."""
    if search == "exact" or (search == "auto" and members.shape[0] < AUTO_EXACT_MEMBERS):
        return ExactIndex(members)
    index = ApproxIndex(members)
    index.measure_recall(k, seed)
    return index


def load_index(members: NDArray[np.float64], saved: NDArray[np.uint8], recall: float) -> NeighbourIndex:
    """The index of :meth:`NeighbourIndex.to_bytes` over the same members."""
    if saved.size == 0:
        return ExactIndex(members)
    return ApproxIndex(members, saved, recall)


def side_by_side(work: Callable[[int], T], clusters: list[int]) -> list[T]:
    """``work`` of each cluster, the clusters on as many threads as :func:`available_threads`, in order.

    A cluster's search, its float64 re-rank and its prior features are faiss, numpy and BLAS
    calls that let the GIL go, so clusters side by side keep every core busy where one cluster at
    a time leaves them idle between faiss's parallel searches. Meanwhile BLAS and OpenMP run one
    thread each, or the threads would oversubscribe the cores (80k against 57k rows/s against a
    1e4-row model on 2 cores). OpenMP's bound is a thread's own, so each worker sets it: bounded
    in the caller only, faiss searched on every core from every worker (scoring against a
    1e5- / 1e6-row model 65k / 35k against 74k / 47k rows/s).
    """
    from threadpoolctl import threadpool_limits

    workers = min(available_threads(), len(clusters))
    if workers <= 1:
        return [work(c) for c in clusters]
    with (
        threadpool_limits(limits=1),
        ThreadPoolExecutor(workers, initializer=lambda: threadpool_limits(limits=1, user_api="openmp")) as pool,
    ):
        return list(pool.map(work, clusters))
