"""The reference set at lakehouse scale (method spec section 5b)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecoval_ops.exceptions import EcovalWarning, InvalidInputError
from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.reference import (
    ALL_ROWS,
    key_draws,
    member_index,
    quotas,
    reference_mask,
    seeded_draws,
    select_reference,
    smallest_draws,
    stratum_counts,
)
from tests.conftest import SHARED_DATASETS, blobs

BEFORE = Path(__file__).parent / "data" / "before_reference.npz"
"""Values of ``EcoVal(seed=1)`` on three datasets, recorded by the method before the reference set existed.

The values, inputs and out-of-sample values were recorded anew when the vote's metric became the
trees' importances (and, before, when the shares' target became the clusters' mean inputs and
``kappa`` got its floor); the clusters are the first recording's.
"""


def _identity_cases() -> dict[str, tuple[np.ndarray, ...]]:
    X, y = blobs(400, noise=0.1, seed=7)
    cases = {"small": (X[:300], y[:300], X[300:], y[300:])}
    X, y = blobs(2400, n_classes=4, d=8, noise=0.1, seed=3)
    cases["blobs4"] = (X[:2000], y[:2000], X[2000:], y[2000:])
    path = SHARED_DATASETS / "pol_722.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            idx = np.random.default_rng(0).permutation(len(f["y"]))[:3500]
            X, y = f["X"][idx].astype(float), f["y"][idx].astype(np.int64)
        cases["pol"] = (X[:3000], y[:3000], X[3000:], y[3000:])
    return cases


@pytest.mark.parametrize("name", ["small", "blobs4", "pol"])
def test_at_most_reference_rows_nothing_changes(name: str) -> None:
    """n <= max_reference_rows: every value, input, cluster and out-of-sample value as before the reference set.

    Bit-identical between R = n and the default R within one process; against the values recorded before
    the reference set existed, clusters are identical and values agree to 1e-6 of the largest: a different
    CPU's BLAS kernels round differently (an AMD machine differs in the 12th digit), and the label prior's
    cosine has been taken in float32 since (its 1e-7 rounding moves values by up to 2e-9 here).
    """
    cases = _identity_cases()
    if name not in cases:
        pytest.skip("the shared datasets are absent")
    X, y, Xv, yv = cases[name]
    before = np.load(BEFORE, allow_pickle=False)
    ev = EcoVal(seed=1).fit(X, y, Xv, yv)
    at_limit = EcoVal(seed=1, max_reference_rows=len(y)).fit(X, y, Xv, yv)
    assert ev.members_.size == at_limit.members_.size == len(y)
    for attr in ("values_", "intrinsic_", "extrinsic_", "clusters_"):
        np.testing.assert_array_equal(getattr(at_limit, attr), getattr(ev, attr))
    np.testing.assert_array_equal(ev.clusters_, before[f"{name}_clusters"])
    observed = {"values": ev.values_, "intrinsic": ev.intrinsic_, "extrinsic": ev.extrinsic_, "oos": ev.value(Xv, yv)}
    for part, got in observed.items():
        recorded = before[f"{name}_{part}"]
        np.testing.assert_allclose(got, recorded, rtol=1e-7, atol=1e-6 * np.abs(recorded).max())


def _noisy(n: int, seed: int = 3) -> tuple[np.ndarray, ...]:
    X, y = blobs(n + 500, n_classes=4, d=8, noise=0.1, seed=seed)
    return X[:n], y[:n], X[n:], y[n:]


@pytest.fixture(scope="module")
def sampled() -> tuple[EcoVal, tuple[np.ndarray, ...]]:
    data = _noisy(4000)
    return EcoVal(seed=2, max_reference_rows=1000).fit(*data), data


def test_efficiency_beyond_the_reference_set(sampled: tuple[EcoVal, tuple[np.ndarray, ...]]) -> None:
    """Invariant 1 at n > R: every training row is valued and each cluster's values sum to n_c share_c*."""
    ev, (_, y, _, _) = sampled
    assert ev.values_.shape == (len(y),)
    assert 990 <= ev.members_.size <= 1000 < len(y)
    sizes = np.bincount(ev.clusters_, minlength=ev.n_clusters_)
    np.testing.assert_array_equal(ev.model_.cluster_sizes(), sizes)
    sums = np.bincount(ev.clusters_, weights=ev.values_, minlength=ev.n_clusters_)
    np.testing.assert_allclose(sums, sizes * ev.model_.cluster_shares(), rtol=1e-10, atol=1e-12)
    # n_c counts every row, so the state's shares are spread over them all.
    assert sizes.sum() == len(y) and ev.model_.member_embeddings().shape[0] == ev.members_.size


def test_every_row_valued_by_one_rule(sampled: tuple[EcoVal, tuple[np.ndarray, ...]], tmp_path: Path) -> None:
    """Invariant 6 at n > R: the saved state (members only) values every training row as the fit did."""
    ev, (X, y, _, _) = sampled
    ev.save(tmp_path)
    loaded = EcoVal.load(tmp_path)
    assert loaded.values_.shape == (ev.members_.size,)
    np.testing.assert_array_equal(loaded.values_, ev.values_[ev.members_])
    member = loaded.model_.member_positions(seeded_draws(len(y), ev.seed))
    assert np.array_equal(np.flatnonzero(member >= 0), ev.members_)
    again = loaded.value_rows(X, y, train_index=member)
    np.testing.assert_allclose(again.values, ev.values_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(again.clusters, ev.clusters_)


def test_sampled_fit_is_deterministic_and_follows_the_draws(sampled: tuple[EcoVal, tuple[np.ndarray, ...]]) -> None:
    ev, data = sampled
    np.testing.assert_array_equal(EcoVal(seed=2, max_reference_rows=1000).fit(*data).values_, ev.values_)
    keys = np.arange(len(data[1])) * 7
    by_key = EcoVal(seed=2, max_reference_rows=1000).fit(*data, draws=key_draws(keys, 2))
    assert not np.array_equal(by_key.members_, ev.members_)
    with pytest.raises(InvalidInputError, match="draws must be"):
        EcoVal(max_reference_rows=1000).fit(*data, draws=np.zeros(3, dtype=np.int64))
    repeated = key_draws(keys, 2)
    repeated[5] = repeated[4]
    with pytest.raises(InvalidInputError, match=f"draws must be distinct; 1 of the {len(keys)} repeat an earlier one"):
        EcoVal(max_reference_rows=1000).fit(*data, draws=repeated)


def test_reference_is_stratified_by_cluster_and_label() -> None:
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 5, size=20_000)
    y = (rng.random(20_000) < 0.1 + 0.15 * clusters).astype(np.int64)
    draws = seeded_draws(20_000, 0)
    counts = stratum_counts(clusters, y, 5, 2)
    quota = quotas(counts, 3000)
    assert quota.sum() == 3000 and np.all(quota <= counts)
    np.testing.assert_allclose(quota, counts * 3000 / 20_000, atol=1)
    thresholds = select_reference(draws, clusters, y, quota)
    taken = reference_mask(draws, clusters, y, thresholds)
    np.testing.assert_array_equal(stratum_counts(clusters[taken], y[taken], 5, 2), quota)
    # Each stratum keeps its smallest draws.
    for c in range(5):
        for k in range(2):
            stratum = (clusters == c) & (y == k)
            assert draws[stratum & taken].max() < draws[stratum & ~taken].min()
    everything = select_reference(draws, clusters, y, counts)
    assert np.all(everything == ALL_ROWS) and reference_mask(draws, clusters, y, everything).all()
    np.testing.assert_array_equal(smallest_draws(draws, 100), np.sort(np.argsort(draws)[:100]))


def test_key_draws_depend_on_the_key_text_and_seed() -> None:
    ints = key_draws(np.array([1, 2, 3]), 0)
    np.testing.assert_array_equal(ints, key_draws(np.array(["1", "2", "3"], dtype=object), 0))
    assert not np.array_equal(ints, key_draws(np.array([1, 2, 3]), 1))
    assert ints.dtype == np.int64 and np.all(ints >= 0)
    np.testing.assert_array_equal(member_index(ints[[2, 0]], ints), [1, -1, 0])


@pytest.mark.parametrize("limit", [10, 30, 60])
def test_a_small_reference_set_keeps_two_members_per_cluster(limit: int) -> None:
    X, y = blobs(400, noise=0.1, seed=7)
    if limit == 10:
        with pytest.warns(EcovalWarning, match="10 rows hold at most 5 clusters"):
            ev = EcoVal(max_reference_rows=limit).fit(X[:300], y[:300], X[300:], y[300:])
    else:
        ev = EcoVal(max_reference_rows=limit).fit(X[:300], y[:300], X[300:], y[300:])
    members = np.bincount(ev.clusters_[ev.members_], minlength=ev.n_clusters_)
    assert members.min() >= 2 and members.sum() <= limit + 2 * ev.n_clusters_
    assert np.isfinite(ev.values_).all() and ev.values_.shape == (300,)


def test_a_reference_set_too_small_to_cluster_says_so() -> None:
    X, y = blobs(400, noise=0.1, seed=7)
    with (
        pytest.warns(EcovalWarning, match="4 rows hold at most 2 clusters"),
        pytest.raises(InvalidInputError, match=r"clustering sample of max_reference_rows = 4 of the 300 rows"),
    ):
        EcoVal(max_reference_rows=4).fit(X[:300], y[:300], X[300:], y[300:])
