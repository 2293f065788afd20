"""One test per invariant of section 6 of the method spec."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from ecoval_ops.valuation import EcoVal, NeighbourPropagator, SecondOrderProduction
from ecoval_ops.valuation.baselines import shapley_from_game
from ecoval_ops.valuation.clustering import n_trainings
from ecoval_ops.valuation.production import ClusterGame, LeaveOutUtilities
from ecoval_ops.valuation.propagation_state import RowInputs, label_scores
from tests.conftest import blobs


def _random_game(p: int, max_order: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[frozenset[int], float]]:
    """A game on p players from random Harsanyi dividends of order 1..max_order."""
    dividends = {
        frozenset(s): float(rng.normal())
        for order in range(1, max_order + 1)
        for s in itertools.combinations(range(p), order)
    }
    values = np.zeros(1 << p)
    for coalition in range(1 << p):
        members = {i for i in range(p) if coalition >> i & 1}
        values[coalition] = sum(d for s, d in dividends.items() if s <= members)
    return values, dividends


def _leave_out(values: np.ndarray, p: int) -> LeaveOutUtilities:
    """The leave-out utilities of a cluster game, with one 'validation row' (no noise)."""
    full_set = (1 << p) - 1
    lco = np.array([[values[full_set & ~(1 << c)]] for c in range(p)])
    pair = np.zeros((p, p, 1))
    for c, d in itertools.combinations(range(p), 2):
        pair[c, d] = pair[d, c] = values[full_set & ~(1 << c) & ~(1 << d)]
    return LeaveOutUtilities(
        full=np.array([values[full_set]]),
        half=np.array([values[full_set] / 2]),
        empty=np.array([values[0]]),
        lco=lco,
        pair=pair,
    )


@pytest.mark.parametrize("p", [2, 3, 5, 8])
def test_invariant_exactness_quadratic_games(p: int, seed: int) -> None:
    values, _ = _random_game(p, max_order=2, rng=np.random.default_rng(seed))
    game = SecondOrderProduction(shrinkage=False, correction=False).fit(_leave_out(values, p))
    np.testing.assert_allclose(game.phi, shapley_from_game(values), atol=1e-10)


@pytest.mark.parametrize("p", [3, 5, 7])
def test_invariant_exactness_error_formula_higher_orders(p: int, seed: int) -> None:
    values, dividends = _random_game(p, max_order=p, rng=np.random.default_rng(seed))
    game = SecondOrderProduction(shrinkage=False, correction=False).fit(_leave_out(values, p))
    expected_error = np.array(
        [
            sum(d * (len(s) - 1) * (len(s) - 2) / (2 * len(s)) for s, d in dividends.items() if c in s and len(s) >= 3)
            for c in range(p)
        ]
    )
    np.testing.assert_allclose(shapley_from_game(values) - game.phi, expected_error, atol=1e-10)
    assert np.abs(expected_error).max() > 1e-3, "the game must have higher-order terms for this test to bite"


def _unclipped_game(p: int) -> ClusterGame:
    """A noiseless concave cluster game whose Gammas solve the diagonal without clipping."""
    rng = np.random.default_rng(3)
    weights = rng.uniform(0.5, 1.5, size=p)
    total = weights.sum()

    def concave(t: float) -> float:
        return t - 0.1 * t**2 / total - 0.02 * t**3 / total**2

    values = np.array([concave(sum(weights[i] for i in range(p) if s >> i & 1)) for s in range(1 << p)])
    u = _leave_out(values, p)
    half = concave(total / 2)
    game = SecondOrderProduction(shrinkage=False).fit(dataclasses.replace(u, half=np.array([half])))
    assert not game.gammas_clipped
    return game


def test_invariant_efficiency() -> None:
    p = 4
    game = _unclipped_game(p)
    X, y = blobs(200, n_classes=3, d=4, noise=0.1, seed=1)
    clusters = np.arange(200) % p
    state, inputs = NeighbourPropagator(empirical_bayes=False).fit(X, y, clusters, game)
    v = state.values(inputs.x, clusters)
    np.testing.assert_allclose(v.sum(), game.total_gain, rtol=1e-12)
    np.testing.assert_allclose(np.bincount(clusters, weights=v), game.phi, rtol=1e-10, atol=1e-12)


def test_invariant_efficiency_per_cluster_with_shrinkage(small_data) -> None:
    ev = EcoVal(n_clusters=4).fit(*small_data)
    sizes = np.bincount(ev.clusters_)
    sums = np.bincount(ev.clusters_, weights=ev.values_)
    np.testing.assert_allclose(sums, sizes * ev.model_.cluster_shares(), rtol=1e-10)


def test_invariant_symmetry(seed: int) -> None:
    X, y = blobs(240, noise=0.1, seed=seed)
    X = np.vstack([X, X[:5]])
    y = np.concatenate([y, y[:5]])
    Xv, yv = blobs(80, noise=0.1, seed=seed + 100)
    ev = EcoVal(n_clusters=3, seed=seed).fit(X, y, Xv, yv)
    np.testing.assert_allclose(ev.values_[:5], ev.values_[-5:], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ev.clusters_[:5], ev.clusters_[-5:])


def test_invariant_monotonicity(small_data) -> None:
    ev = EcoVal(n_clusters=3).fit(*small_data)
    dist = np.array([[0.5, 1.0, 1.5, 2.0]])
    prior = np.array([[0.3, 0.7]])
    # agree_i = score of the row's label (class 0): more neighbours with it, or a higher prior, raise it.
    agree = [label_scores(dist, np.array([[0] * j + [1] * (4 - j)]), 1.0, prior, 5.0)[0, 0] for j in range(5)]
    assert np.all(np.diff(agree) > 0)
    labels = np.array([[0, 1, 1, 0]])
    by_prior = [label_scores(dist, labels, 1.0, np.array([[q, 1 - q]]), 5.0)[0, 0] for q in (0, 0.5, 1)]
    assert np.all(np.diff(by_prior) > 0)
    state = ev.model_._state  # white-box: section 4's rule on the fitted state itself
    clusters = np.zeros(5, dtype=np.int64)
    alpha = np.linspace(-1, 1, 5)
    values = state.values(RowInputs(alpha=alpha, beta=np.full(5, 0.7), rho=np.ones(5)).x, clusters)
    assert np.all(np.diff(values) > 0)
    # End to end, beta held at 1 (gamma = 1): a row agreeing with more neighbours is worth more.
    flat = dataclasses.replace(state, gamma=1.0)
    X_train, _y_train = small_data[0], small_data[1]
    x = X_train[:1]
    labels = np.arange(3)
    assign = ev.model_.assigner()
    Z = assign.space.cluster_space(np.repeat(x, 3, axis=0))
    c = assign.model.assign(Z)
    inputs = flat.inputs(Z, labels, c)
    order = np.argsort(inputs.alpha)
    assert np.all(np.diff(flat.values(inputs.x, c)[order]) >= 0)
    assert inputs.alpha[order][-1] > inputs.alpha[order][0]


def test_a_model_no_better_than_the_prior_keeps_the_rows_order_within_clusters() -> None:
    from ecoval_ops.valuation.propagation import kappa_of

    phi_se, sizes = np.array([0.3, 0.5, 0.4]), np.array([30, 50, 40])
    noise = np.sqrt(np.mean((phi_se / sizes) ** 2))
    # A gain per row within the shares' noise leaves kappa at the noise, not at |mu| near 0 ...
    assert kappa_of(20.0, 1e-9, phi_se, sizes) == pytest.approx(20.0 * noise)
    assert kappa_of(20.0, -1e-9, phi_se, sizes) == pytest.approx(20.0 * noise)
    # ... and a larger one is the spec's c_kappa |mu|.
    assert kappa_of(20.0, -10 * noise, phi_se, sizes) == pytest.approx(200.0 * noise)


def test_shares_told_from_noise_pass_through_and_noisy_ones_leave_the_rows_inputs_their_order() -> None:
    p, n = 4, 200
    game = _unclipped_game(p)
    X, y = blobs(n, n_classes=3, d=4, noise=0.3, seed=2)
    clusters = np.arange(n) % p
    # Shares measured without noise pass through: each cluster's values sum to phi_c (the spec's).
    exact = dataclasses.replace(game, phi_se=np.zeros(p))
    state, inputs = NeighbourPropagator().fit(X, y, clusters, exact)
    np.testing.assert_allclose(np.bincount(clusters, weights=state.values(inputs.x, clusters)), game.phi, rtol=1e-10)
    # Shares lost in noise stand aside for the rows' inputs across clusters too, each cluster
    # still summing to n_c share_c*.
    noisy = dataclasses.replace(game, phi_se=np.full(p, 1e3))
    state, inputs = NeighbourPropagator().fit(X, y, clusters, noisy)
    v = state.values(inputs.x, clusters)
    assert np.all(state.shrink == 0.0)
    mu = game.total_gain / n
    np.testing.assert_allclose(v, mu + state.kappa * (inputs.x - inputs.x.mean()), rtol=1e-9)
    assert np.bincount(clusters, weights=inputs.x).std() > 0
    np.testing.assert_allclose(np.bincount(clusters, weights=v), np.bincount(clusters) * state.share, rtol=1e-10)


def test_invariant_diminishing_returns() -> None:
    game = dataclasses.replace(_unclipped_game(2), returns_to_scale=0.5)
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 10])
    y = np.array([0] * 60 + [1] * 60)
    clusters = np.array([0] * 60 + [1] * 60)
    row = 3
    before_state, before_inputs = NeighbourPropagator(empirical_bayes=False).fit(X, y, clusters, game)
    before = before_state.values(before_inputs.x, clusters)[row]
    X2, y2, c2 = np.vstack([X, X[row]]), np.append(y, y[row]), np.append(clusters, clusters[row])
    after_state, after_inputs = NeighbourPropagator(empirical_bayes=False).fit(X2, y2, c2, game)
    after = after_state.values(after_inputs.x, c2)
    # The row's label agrees with every neighbour of its vote.
    _, neighbours = before_state.neighbours(X[row : row + 1], int(clusters[row]), np.array([row]))
    assert np.all(y[neighbours] == y[row])
    assert after[row] < before and after[-1] < before
    assert after[row] == pytest.approx(after[-1], rel=1e-12)


def test_invariant_consistency(small_data, tmp_path) -> None:
    ev = EcoVal(n_clusters=4).fit(*small_data)
    X, y = small_data[0], small_data[1]
    oos = ev.value(X, y, train_index=np.arange(y.size))
    np.testing.assert_allclose(oos, ev.values_, rtol=1e-10, atol=1e-14)
    loaded = EcoVal.load(ev.save(tmp_path / "state"))
    np.testing.assert_allclose(loaded.value(X, y, train_index=np.arange(y.size)), ev.values_, rtol=1e-10, atol=1e-14)


def test_invariant_determinism(small_data) -> None:
    first = EcoVal(seed=5).fit(*small_data)
    second = EcoVal(seed=5).fit(*small_data)
    assert np.array_equal(first.values_, second.values_)
    assert np.array_equal(first.cluster_values_, second.cluster_values_)
    assert first.gamma_alpha_ == second.gamma_alpha_


@pytest.mark.parametrize(("pairwise", "seeds"), [(True, 1), (False, 1), (True, 2)])
def test_invariant_cost(pairwise: bool, seeds: int) -> None:
    counts = []
    for n in (300, 900):
        X, y = blobs(n + 100, seed=n)
        ev = EcoVal(n_clusters=5, pairwise=pairwise, seeds=seeds).fit(X[:n], y[:n], X[n:], y[n:])
        assert ev.n_clusters_ == 5
        counts.append(ev.n_trainings_)
    assert counts[0] == counts[1] == n_trainings(5, pairwise=pairwise, seeds=seeds)
    assert counts[0] == seeds * (2 + 5 + (10 if pairwise else 0))
