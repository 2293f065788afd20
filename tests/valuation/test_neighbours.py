"""The nearest-member search: exact to a float64 brute force, approximate with its recall measured and saved."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.neighbours import (
    AUTO_EXACT_MEMBERS,
    ApproxIndex,
    ExactIndex,
    NeighbourIndex,
    build_index,
    load_index,
)
from tests.conftest import blobs


def _brute(members: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None):
    """The k nearest in float64 by (distance, member index), each query's excluded member left out."""
    sq = ((queries[:, None, :] - members[None, :, :]) ** 2).sum(axis=2)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        sq[rows, exclude[rows]] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(members.shape[0]), sq.shape), sq), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(sq, order, axis=1)), order


class _Float64Index(NeighbourIndex):
    """The float64 brute force behind the index interface: what ``exact`` must reproduce."""

    kind = "exact"

    def _candidates(self, queries: np.ndarray, wanted: int) -> np.ndarray:
        return _brute(self._members, queries.astype(np.float64), wanted, None)[1]

    def to_bytes(self) -> np.ndarray:
        return np.zeros(0, dtype=np.uint8)


def _points(n: int, d: int = 6, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=(n, d))


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_the_exact_index_is_the_float64_search_with_ties_broken_by_member(scale: float) -> None:
    members = _points(900, scale=scale)
    members[500:520] = members[3]  # a block of duplicates: 21 members at the same distance from any row
    queries = np.vstack([_points(300, seed=1, scale=scale), members[[3, 40, 700]]])
    exclude = np.full(queries.shape[0], -1)
    exclude[-3:] = [3, 40, 700]
    for k in (1, 10, 25):
        dist, index = ExactIndex(members).search(queries, k, exclude)
        want_dist, want_index = _brute(members, queries, k, exclude)
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_allclose(dist, want_dist, rtol=1e-12, atol=1e-9 * scale)
    assert 3 not in ExactIndex(members).search(members[[3]], 25, np.array([3]))[1]


def test_the_approximate_index_measures_its_recall_and_keeps_it_through_a_save() -> None:
    centres = _points(40, d=16, seed=2, scale=4.0)
    members = centres[np.arange(6000) % 40] + _points(6000, d=16, seed=3)
    index = build_index(members, "approx", k=20, seed=0)
    assert isinstance(index, ApproxIndex) and 0.9 <= index.recall <= 1.0
    queries = centres[np.arange(500) % 40] + _points(500, d=16, seed=4)
    dist, found = index.search(queries, 20)
    truth = _brute(members, queries, 20, None)[1]
    assert np.mean([np.intersect1d(a, b).size / 20 for a, b in zip(found, truth, strict=True)]) >= 0.9
    # The distances are float64 ones of the members found, nearest first.
    np.testing.assert_allclose(dist, np.linalg.norm(members[found] - queries[:, None, :], axis=2), rtol=1e-12)
    assert np.all(np.diff(dist, axis=1) >= 0)
    loaded = load_index(members, index.to_bytes(), index.recall)
    assert isinstance(loaded, ApproxIndex) and loaded.recall == index.recall
    np.testing.assert_array_equal(loaded.search(queries, 20)[1], found)


def test_auto_searches_exactly_below_its_member_count_and_approximately_above() -> None:
    small, large = _points(AUTO_EXACT_MEMBERS - 1), _points(AUTO_EXACT_MEMBERS)
    assert build_index(small, "auto", k=10, seed=0).kind == "exact"
    assert build_index(large, "auto", k=10, seed=0).kind == "approx"
    assert build_index(large, "exact", k=10, seed=0).kind == "exact"
    assert load_index(small, build_index(small, "auto", k=10, seed=0).to_bytes(), np.nan).kind == "exact"


def _fit(search: str, seed: int = 0) -> tuple[EcoVal, np.ndarray, np.ndarray]:
    X, y = blobs(3000, n_classes=4, d=8, noise=0.15, seed=seed)
    Xv, yv = blobs(400, n_classes=4, d=8, noise=0.0, seed=seed + 1)
    return EcoVal(n_clusters=4, seed=seed, neighbour_search=search).fit(X, y, Xv, yv), *blobs(
        2000, n_classes=4, d=8, noise=0.15, seed=seed + 2
    )


def test_exact_values_are_those_of_the_float64_search() -> None:
    ev, X_new, y_new = _fit("exact")
    state = ev.model_._state  # white-box: the same state searched by the float64 brute force
    exact = ev.value(X_new, y_new)
    for c in range(ev.n_clusters_):
        state._indexes[c] = _Float64Index(state.index(c)._members)
    np.testing.assert_allclose(ev.value(X_new, y_new), exact, rtol=1e-9, atol=1e-12)


def test_approximate_values_rank_as_the_exact_ones_and_the_run_reports_its_recall(tmp_path) -> None:
    exact, X_new, y_new = _fit("exact")
    approx = _fit("approx")[0]
    assert spearmanr(approx.values_, exact.values_).statistic >= 0.999
    assert spearmanr(approx.value(X_new, y_new), exact.value(X_new, y_new)).statistic >= 0.999
    figures = approx.model_.figures()
    assert figures["approx_clusters"] == approx.n_clusters_ and 0.9 <= figures["neighbour_recall"] <= 1.0
    assert exact.model_.figures()["approx_clusters"] == 0 and "neighbour_recall" not in exact.model_.figures()
    loaded = EcoVal.load(approx.save(tmp_path / "model"))
    assert loaded.model_.figures() == figures
    np.testing.assert_array_equal(loaded.value(X_new, y_new), approx.value(X_new, y_new))


def test_an_unknown_search_is_refused_before_any_work() -> None:
    X, y = blobs(200, seed=0)
    with pytest.raises(InvalidInputError, match="neighbour_search must be one of 'exact', 'approx', 'auto'"):
        EcoVal(neighbour_search="fast").fit(X, y, X, y)  # type: ignore[arg-type]
