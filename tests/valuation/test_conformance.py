"""One conformance suite over EcoVal and every baseline (scikit-learn's parametrize_with_checks)."""

from __future__ import annotations

import numpy as np
import pytest

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.baselines import data_oob, exact_shapley, knn_shapley, leave_one_out, tmc_shapley
from ecoval_ops.valuation.result import ValuationResult
from tests.conftest import blobs

METHODS = {
    "ecoval": lambda *a: EcoVal(n_clusters=3).fit(*a).result_,
    "exact_shapley": lambda *a: exact_shapley(*(x[:8] if i < 2 else x for i, x in enumerate(a))),
    "leave_one_out": leave_one_out,
    "tmc_shapley": lambda *a: tmc_shapley(*a, budget=300),
    "knn_shapley": knn_shapley,
    "data_oob": lambda *a: data_oob(*a, n_estimators=30),
}


@pytest.fixture
def data():
    X, y = blobs(130, n_classes=2, d=3, noise=0.1, seed=21)
    return X[:100], y[:100], X[100:], y[100:]


@pytest.mark.parametrize("method", METHODS, ids=list(METHODS))
def test_deterministic_finite_and_aligned(method: str, data) -> None:
    copies = [a.copy() for a in data]
    result = METHODS[method](*data)
    # One API for every method: the result type, its name and the trainings it ran.
    assert isinstance(result, ValuationResult) and result.method == method
    assert result.n_trainings is not None and result.n_trainings >= 0
    first, second = np.asarray(result), np.asarray(METHODS[method](*data))
    n = 8 if method == "exact_shapley" else 100
    assert first.shape == (n,) and first.dtype == np.float64
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    for before, after in zip(copies, data, strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("method", METHODS, ids=list(METHODS))
def test_rejects_nan_and_empty(method: str, data) -> None:
    X, y, Xv, yv = data
    bad = X.copy()
    bad[1, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        METHODS[method](bad, y, Xv, yv)
    with pytest.raises(InvalidInputError, match="empty"):
        METHODS[method](X, y, Xv[:0], yv[:0])


@pytest.mark.parametrize("method", METHODS, ids=list(METHODS))
def test_mislabelled_rows_rank_low(method: str) -> None:
    X, y = blobs(110, n_classes=2, d=3, seed=5)
    y_noisy = y.copy()
    y_noisy[:4] = 1 - y[:4]
    cut = 8 if method == "exact_shapley" else 80
    values = np.asarray(METHODS[method](X[:cut], y_noisy[:cut], X[80:], y[80:]))
    if method == "exact_shapley":
        assert values[:4].mean() < values[4:].mean()
    else:
        assert np.mean(values[:4]) < np.quantile(values[4:], 0.25)
