"""The supervised metric and the leave-cluster-out label prior of the intrinsic vote."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from ecoval_ops.valuation.supervised import FEATURES, RIDGE, LabelPrior, metric_weights, random_features


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=300)
    # Feature 0 carries the label, feature 1 is noise of the same spread, feature 2 a weak echo.
    Z = np.column_stack([y + rng.normal(0, 0.3, 300), rng.normal(0, 1, 300), 0.2 * y + rng.normal(0, 1, 300)])
    clusters = rng.integers(0, 4, size=300)
    return Z, y, clusters


def test_each_leave_cluster_out_fit_is_the_ridge_fit_on_the_other_clusters() -> None:
    Z, y, clusters = _data()
    prior = LabelPrior.fit(Z, y, clusters, p=4, seed=0)
    Y = np.eye(3)[y]
    F = random_features(prior.space(Z), prior.frequencies, prior.phases).astype(np.float64)
    assert F.shape == (300, FEATURES)
    for c in range(4):
        outside = clusters != c
        ridge = Ridge(alpha=RIDGE).fit(F[outside], Y[outside])
        np.testing.assert_allclose(prior.coef[c], ridge.coef_.T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(prior.intercept[c], ridge.intercept_, rtol=1e-9, atol=1e-12)
        expected = np.clip(ridge.predict(F[clusters == c]), 0, 1)
        np.testing.assert_allclose(prior.scores(Z[clusters == c], c), expected, rtol=1e-9, atol=1e-12)


def test_the_metric_weighs_the_features_that_predict_the_label() -> None:
    Z, y, clusters = _data(1)
    w = LabelPrior.fit(Z, y, clusters, p=4, seed=0).weights
    # The echo adds little once feature 0 is known: both other features fade.
    assert w[0] == 1.0 and w[1] < 0.2 and w[2] < 0.2


def test_the_metric_finds_a_feature_that_acts_on_the_label_non_linearly() -> None:
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(600, 4))
    # The label is |z_2| > 0.7: no linear fit leans on feature 2, its coefficient is about 0.
    y = (np.abs(Z[:, 2]) > 0.7).astype(np.int64)
    w = metric_weights(Z, y, seed=0)
    assert w[2] == 1.0 and np.all(np.delete(w, 2) < 0.2)
    np.testing.assert_array_equal(metric_weights(Z, y, seed=0), w)
    np.testing.assert_array_equal(metric_weights(Z, np.zeros(600, dtype=np.int64), seed=0), np.ones(4))


def test_the_metric_is_fitted_on_a_seeded_sample_of_many_rows(monkeypatch) -> None:
    import ecoval_ops.valuation.supervised as supervised

    rng = np.random.default_rng(6)
    Z = rng.normal(size=(400, 3))
    y = (Z[:, 1] > 0).astype(np.int64)
    every_row = metric_weights(Z, y, seed=0)
    monkeypatch.setattr(supervised, "METRIC_ROWS", 100)
    a, b, c = (metric_weights(Z, y, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert a[1] == 1.0 and not np.array_equal(a, c) and not np.array_equal(a, every_row)


def test_a_flipped_label_gets_a_low_prior_from_the_rest_of_the_data() -> None:
    Z, y, clusters = _data(2)
    noisy = y.copy()
    noisy[:10] = (y[:10] + 1) % 3
    prior = LabelPrior.fit(Z, noisy, clusters, p=4, seed=0)
    q = np.concatenate([prior.scores(Z[i : i + 1], int(clusters[i]))[:, noisy[i]] for i in range(300)])
    assert q[:10].mean() < 0.3 < 0.55 < q[10:].mean()
    assert roc_auc_score(np.arange(300) < 10, -q) > 0.9


def test_therandom_features_come_from_the_seed() -> None:
    Z, y, clusters = _data(3)
    a, b, c = (LabelPrior.fit(Z, y, clusters, p=4, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.coef, b.coef)
    assert not np.allclose(a.frequencies, c.frequencies)


def test_the_fit_in_row_chunks_equals_the_fit_in_one(monkeypatch) -> None:
    import ecoval_ops.valuation.supervised as supervised

    Z, y, clusters = _data(4)
    whole = LabelPrior.fit(Z, y, clusters, p=4, seed=0)
    monkeypatch.setattr(supervised, "_CHUNK_ROWS", 7)
    chunked = LabelPrior.fit(Z, y, clusters, p=4, seed=0)
    np.testing.assert_allclose(chunked.coef, whole.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(chunked.intercept, whole.intercept, rtol=1e-9, atol=1e-12)
