"""The batched masked trainer against scikit-learn and against itself one model at a time."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from ecoval_ops.valuation import MLPClassifier, SklearnLearner, SoftmaxRegression
from ecoval_ops.valuation.learners import learner_from_name, trains_torch
from tests.conftest import blobs


@pytest.fixture
def masked():
    X, y = blobs(300, n_classes=3, d=4, noise=0.15, seed=2)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    Xv, _ = blobs(50, n_classes=3, d=4, seed=3)
    rng = np.random.default_rng(0)
    masks = rng.random((6, 300)) < 0.7
    masks[0] = True
    return X, y, masks, Xv


def test_softmax_regression_matches_scikit_learn(masked) -> None:
    X, y, masks, Xv = masked
    proba = SoftmaxRegression(device="cpu", tol=1e-9).predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    for r, mask in enumerate(masks):
        reference = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X[mask], y[mask]).predict_proba(Xv)
        np.testing.assert_allclose(proba[r], reference, atol=1e-5)


def test_each_model_is_independent_of_its_batch(masked) -> None:
    # Each model has its own L-BFGS state, so its optimum is the same whatever shares its
    # batch; only rounding differs, bounded by tol / ridge = 1e-10 * 300 = 3e-8 in the weights.
    X, y, masks, Xv = masked
    kwargs = {"device": "cpu", "tol": 1e-10, "max_iter": 2000}
    batched = SoftmaxRegression(**kwargs).predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    alone = SoftmaxRegression(**kwargs, one_by_one=True).predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    np.testing.assert_allclose(batched, alone, atol=1e-7)
    chunked = SoftmaxRegression(**kwargs, batch_size=4).predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    np.testing.assert_allclose(batched, chunked, atol=1e-7)


def test_a_class_missing_from_a_mask_gets_low_probability(masked) -> None:
    X, y, _, Xv = masked
    masks = np.stack([np.ones(300, bool), y != 2])
    proba = SoftmaxRegression(device="cpu").predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    assert proba.shape == (2, 50, 3)
    np.testing.assert_allclose(proba.sum(axis=2), 1.0, atol=1e-12)
    assert proba[1, :, 2].max() < proba[0, :, 2].max()


def test_mlp_learns_and_is_deterministic(masked) -> None:
    X, y, masks, _Xv = masked
    learner = MLPClassifier(device="cpu", hidden=16, steps=200)
    first = learner.predict_proba_masked(X, y, masks, X, n_classes=3, seed=1)
    second = learner.predict_proba_masked(X, y, masks, X, n_classes=3, seed=1)
    assert np.array_equal(first, second)
    assert (first[0].argmax(axis=1) == y).mean() > 0.8


def test_sklearn_learner_single_class_mask_and_no_mutation(masked) -> None:
    X, y, _, Xv = masked
    estimator = GaussianNB()
    masks = np.stack([np.ones(300, bool), y == 1])
    proba = SklearnLearner(estimator).predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    np.testing.assert_array_equal(proba[1], np.tile([0.0, 1.0, 0.0], (50, 1)))
    assert not hasattr(estimator, "classes_")


def test_learner_resolution() -> None:
    assert isinstance(learner_from_name("logistic", "cpu"), SoftmaxRegression)
    assert isinstance(learner_from_name("mlp", "cpu"), MLPClassifier)
    assert isinstance(learner_from_name(GaussianNB(), "cpu"), SklearnLearner)
    trees = learner_from_name("trees", "cpu")
    assert isinstance(trees, SklearnLearner) and type(trees.estimator).__name__ == "HistGradientBoostingClassifier"
    custom = SoftmaxRegression()
    assert learner_from_name(custom, "cpu") is custom
    # Which learners load torch (EcoVal's threads bound it before it loads, and only then).
    assert [trains_torch(x) for x in ("logistic", "mlp", "trees", GaussianNB(), custom)] == [
        True,
        True,
        False,
        False,
        True,
    ]


@pytest.mark.gpu
def test_cuda_matches_cpu(masked) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (run where the device tool lends a GPU)")
    X, y, masks, Xv = masked
    cpu = SoftmaxRegression(device="cpu").predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    gpu = SoftmaxRegression(device="cuda").predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    np.testing.assert_allclose(cpu, gpu, atol=1e-3)
