"""Baselines against brute-force Shapley and closed forms on tiny data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from ecoval_ops.valuation.baselines import (
    confident_learning,
    data_oob,
    exact_shapley,
    knn_agreement,
    knn_shapley,
    leave_one_out,
    shapley_from_game,
    tmc_shapley,
)
from ecoval_ops.valuation.utility import per_example_utility, prior_utility
from tests.conftest import blobs


def test_shapley_from_game_closed_forms() -> None:
    weights = np.array([0.5, -1.0, 2.0, 0.25])
    additive = np.array([sum(weights[i] for i in range(4) if s >> i & 1) for s in range(16)])
    np.testing.assert_allclose(shapley_from_game(additive), weights)
    unanimity = np.array([1.0 if s & 0b0111 == 0b0111 else 0.0 for s in range(16)])
    np.testing.assert_allclose(shapley_from_game(unanimity), [1 / 3, 1 / 3, 1 / 3, 0.0])


def _knn_utility(X, y, Xv, yv, subset, k):
    if not subset:
        return 0.0
    idx = np.array(subset)
    total = 0.0
    for x, label in zip(Xv, yv, strict=True):
        d = np.sum((X[idx] - x) ** 2, axis=1)
        nearest = idx[np.argsort(d, kind="stable")[:k]]
        total += np.sum(y[nearest] == label) / k
    return total / len(yv)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_shapley_matches_brute_force(k: int, seed: int) -> None:
    X, y = blobs(7, n_classes=2, d=3, noise=0.3, seed=seed)
    Xv, yv = blobs(4, n_classes=2, d=3, noise=0.3, seed=seed + 50)
    y[:2] = [0, 1]  # both classes in training whatever the seed draws
    mean, scale = X.mean(axis=0), X.std(axis=0)
    Xs, Xvs = (X - mean) / scale, (Xv - mean) / scale
    game = np.array([_knn_utility(Xs, y, Xvs, yv, [i for i in range(7) if s >> i & 1], k) for s in range(1 << 7)])
    np.testing.assert_allclose(knn_shapley(X, y, Xv, yv, k=k), shapley_from_game(game), atol=1e-12)


def _sklearn_game(X, y, Xv, yv, n, utility="log_likelihood", learner=None):
    """U(S) by fitting scikit-learn on each subset: an oracle independent of the batched trainer."""
    mean, scale = X.mean(axis=0), X.std(axis=0)
    Xs, Xvs = (X - mean) / scale, (Xv - mean) / scale
    empty = prior_utility(y, yv, 2, utility).mean()
    out = np.empty(1 << n)
    for s in range(1 << n):
        rows = [i for i in range(n) if s >> i & 1]
        if not rows:
            out[s] = empty
            continue
        proba = np.zeros((1, len(yv), 2))
        if np.unique(y[rows]).size == 1:
            proba[0, :, y[rows][0]] = 1.0
        else:
            model = (learner or LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000)).fit(Xs[rows], y[rows])
            proba[0] = model.predict_proba(Xvs)
        out[s] = per_example_utility(proba, yv, utility).mean()
    return out


@pytest.fixture
def tiny():
    X, y = blobs(6, n_classes=2, d=2, noise=0.2, seed=11)
    Xv, yv = blobs(20, n_classes=2, d=2, noise=0.2, seed=12)
    assert np.unique(y).size == 2
    return X, y, Xv, yv


def test_exact_shapley_matches_independent_oracle(tiny) -> None:
    X, y, Xv, yv = tiny
    oracle = shapley_from_game(_sklearn_game(X, y, Xv, yv, 6))
    values = exact_shapley(X, y, Xv, yv, learner=LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000))
    np.testing.assert_allclose(values, oracle, atol=1e-6)


def test_exact_shapley_efficiency_and_symmetry(tiny) -> None:
    X, y, Xv, yv = tiny
    X = np.vstack([X, X[:1]])
    y = np.append(y, y[0])
    game = _sklearn_game(X, y, Xv, yv, 7)
    values = exact_shapley(X, y, Xv, yv, learner=LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000)).values
    assert values.sum() == pytest.approx(game[-1] - game[0], rel=1e-9)
    assert values[0] == pytest.approx(values[-1], abs=1e-9)


def test_exact_shapley_refuses_large_n(small_data) -> None:
    with pytest.raises(ValueError, match="exceeds max_rows"):
        exact_shapley(*small_data)


def test_leave_one_out_matches_independent_oracle(tiny) -> None:
    X, y, Xv, yv = tiny
    game = _sklearn_game(X, y, Xv, yv, 6)
    full = (1 << 6) - 1
    expected = np.array([game[full] - game[full & ~(1 << i)] for i in range(6)])
    values = leave_one_out(X, y, Xv, yv, learner=LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000))
    np.testing.assert_allclose(values, expected, atol=1e-9)


def test_tmc_shapley_is_efficient_and_converges(tiny) -> None:
    # Accuracy bounds every marginal in [-1, 1], so 2000 permutations put the estimate within
    # about 0.011 (one standard error) of the exact value; 0.05 is more than 4 of them.
    # Gaussian naive Bayes keeps the 8000 fits cheap; what is tested is the permutation logic.
    X, y, Xv, yv = (a[:4] if a.shape[0] == 6 else a for a in tiny)
    learner = GaussianNB()
    game = _sklearn_game(X, y, Xv, yv, 4, utility="accuracy", learner=learner)
    values = tmc_shapley(
        X, y, Xv, yv, budget=1 + 4 * 2000, truncation=0.0, learner=learner, chunk=4, utility="accuracy"
    ).values
    assert values.sum() == pytest.approx(game[-1] - game[0], abs=1e-12)
    np.testing.assert_allclose(values, shapley_from_game(game), atol=0.05)


def test_tmc_shapley_budget_too_small(tiny) -> None:
    with pytest.raises(ValueError, match="completes no permutation"):
        tmc_shapley(*tiny, budget=3, truncation=0.0)


def test_data_oob_flags_a_mislabelled_row() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 8])
    y = np.array([0] * 60 + [1] * 60)
    y[5] = 1
    result = data_oob(X, y, X[:10], np.zeros(10, dtype=int), n_estimators=100, seed=0)
    assert (result.method, result.n_trainings) == ("data_oob", 100)
    values = result.values
    assert np.all((values >= 0) & (values <= 1))
    assert values[5] < 0.2
    assert np.median(np.delete(values, 5)) == 1.0
    assert np.array_equal(values, data_oob(X, y, X[:10], np.zeros(10, dtype=int), n_estimators=100, seed=0))


def test_leave_one_out_batched_agrees_with_sklearn_loop(small_data) -> None:
    X, y, Xv, yv = (a[:40] for a in small_data)
    batched = leave_one_out(X, y, Xv, yv, device="cpu").values
    oracle = leave_one_out(X, y, Xv, yv, learner=LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000)).values
    np.testing.assert_allclose(batched, oracle, atol=5e-4)
    assert list(itertools.islice(np.argsort(batched), 5)) == list(itertools.islice(np.argsort(oracle), 5))


def test_knn_agreement_is_the_share_of_neighbours_with_the_same_label() -> None:
    # Two tight groups on a line; row 2 carries group a's position with group b's label.
    X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    y = np.array([0, 0, 1, 1, 1, 1])
    result = knn_agreement(X, y, X, y, k=2)
    np.testing.assert_allclose(np.asarray(result), [0.5, 0.5, 0.0, 1.0, 1.0, 1.0])
    assert result.method == "knn_agreement" and result.n_trainings == 0
    # Exact duplicates: the row itself is never its own neighbour, wherever the search puts it.
    twins = knn_agreement(np.array([[0.0], [0.0], [0.0], [9.0]]), np.array([0, 1, 1, 0]), X, y, k=2)
    np.testing.assert_allclose(np.asarray(twins)[:3], [0.0, 0.5, 0.5])


@pytest.mark.parametrize("learner", ["random_forest", "logistic"])
def test_confident_learning_ranks_flipped_rows_low(learner) -> None:
    X, y = blobs(400, noise=0.0, seed=3)
    flipped = np.zeros(y.size, bool)
    flipped[::10] = True
    y_noisy = np.where(flipped, (y + 1) % 3, y)
    result = confident_learning(X, y_noisy, X[:50], y[:50], learner=learner, n_estimators=50, seed=0)
    values = np.asarray(result)
    assert result.method == "cleanlab" and result.n_trainings == 5
    assert values[flipped].mean() < 0.3 < 0.7 < values[~flipped].mean()
