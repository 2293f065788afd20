"""Bad input, one parametrized row each: the input, the exception and the message it must carry."""

from __future__ import annotations

import numpy as np
import pytest

from ecoval_ops.exceptions import EcovalWarning, InvalidInputError, NotFittedError
from ecoval_ops.valuation import EcoVal
from tests.conftest import blobs

X, Y = blobs(200, seed=3)
XV, YV = blobs(60, seed=4)


def _with(index: tuple[int, int], value: float) -> np.ndarray:
    out = X.copy()
    out[index] = value
    return out


BAD_FIT = [
    ("X_train 1-D", (X[:, 0], Y, XV, YV), "X_train must be 2-D"),
    ("y_train 2-D", (X, Y[:, None], XV, YV), "y_train must be 1-D"),
    ("length mismatch", (X, Y[:-1], XV, YV), "y_train has 199 labels for 200 rows"),
    ("feature mismatch", (X, Y, XV[:, :3], YV), "X_val has 3 features; expected 5"),
    (
        "NaN feature",
        (_with((7, 2), np.nan), Y, XV, YV),
        r"X_train has 1 NaN or infinite values in 1 rows \(first row index 7\)",
    ),
    ("inf feature", (_with((9, 0), np.inf), Y, XV, YV), r"first row index 9"),
    (
        "NaN label",
        (X, np.where(np.arange(200) == 4, np.nan, Y.astype(float)), XV, YV),
        r"y_train has 1 missing labels \(first row index 4\)",
    ),
    ("None label", (X, np.array([None, *list(Y[1:])], dtype=object), XV, YV), "y_train has 1 missing labels"),
    ("fractional label", (X, Y + 0.5, XV, YV), "non-integer floats"),
    ("single class", (X, np.zeros(200, dtype=int), XV, np.zeros(60, dtype=int)), "single class"),
    (
        "unseen validation label",
        (X, Y, XV, np.where(np.arange(60) < 3, 9, YV)),
        "y_val has 3 rows with labels unseen in training: 9",
    ),
    ("empty training set", (X[:0], Y[:0], XV, YV), "X_train is empty"),
    ("empty validation set", (X, Y, XV[:0], YV[:0]), "X_val is empty"),
    ("non-numeric features", (np.full((200, 2), "a"), Y, XV[:, :2], YV), "X_train must be numeric"),
    (
        "too few rows",
        (X[:3], np.array([0, 1, 0]), XV, np.where(YV > 1, 0, YV)),
        "too few: 2 clusters of at least 2 rows need 4 rows",
    ),
]


@pytest.mark.parametrize(("case", "args", "message"), BAD_FIT, ids=[c[0] for c in BAD_FIT])
def test_fit_rejects_bad_input(case: str, args: tuple, message: str) -> None:
    copies = [np.array(a, copy=True) for a in args]
    with pytest.raises(InvalidInputError, match=message):
        EcoVal(n_clusters=3).fit(*args)
    for before, after in zip(copies, args, strict=True):
        np.testing.assert_array_equal(before, after)


BAD_PARAMS = [
    ({"utility": "auc"}, "EcoVal: utility must be one of 'log_likelihood', 'accuracy'; found 'auc'"),
    ({"seeds": 0}, "EcoVal: seeds must be an integer >= 1; found 0"),
    ({"k_neighbors": 0}, "k_neighbors must be an integer >= 1"),
    ({"k_neighbors": "3"}, "k_neighbors must be an integer >= 1; found '3'"),
    ({"c_kappa": float("nan")}, "c_kappa must be a finite number >= 0"),
    ({"n_clusters": 1}, "n_clusters must be an integer >= 2 or None; found 1"),
    ({"budget": 4}, "budget 4 allows 1 clusters"),
    ({"learner": "forest"}, "EcoVal: learner must be one of 'logistic', 'mlp', .*; found 'forest'"),
    (
        {"learner": object()},
        r"learner must be one of 'logistic', 'mlp', 'trees', a Learner \(predict_proba_masked\) or a "
        r"Classifier \(fit, predict_proba\)",
    ),
    ({"device": "gpu"}, "EcoVal: device must be one of 'auto', 'cpu', 'cuda'; found 'gpu'"),
    ({"min_cluster_frac": 0.7}, "min_cluster_frac must be a number >= 0 and < 0.5; found 0.7"),
    ({"production": object()}, r"production must be a ProductionFunction \(fit\) or None"),
    ({"propagator": "knn"}, "propagator must be a Propagator .* or None"),
]


def _case_id(params: dict) -> str:
    """The case's parameters; an object stands as its type (its address differs between processes)."""
    shown = {k: repr(v) if isinstance(v, (str, int, float)) else type(v).__name__ for k, v in params.items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS, ids=[_case_id(p) for p, _ in BAD_PARAMS])
def test_fit_rejects_bad_parameters(params: dict, message: str, monkeypatch) -> None:
    from ecoval_ops.valuation import stages

    # Declarative checks run before any work: no learner may be built, no model trained.
    monkeypatch.setattr(stages, "learner_from_name", lambda *a: pytest.fail("a learner was built"))
    with pytest.raises(InvalidInputError, match=message):
        EcoVal(**params).fit(X, Y, XV, YV)
    with pytest.raises(ValueError, match=message):
        EcoVal(**params).prepare(X, Y, XV, YV)


def test_fewer_rows_than_clusters_reduces_p_with_a_warning() -> None:
    with pytest.warns(EcovalWarning, match="12 clusters asked for but 20 rows hold at most 10 clusters of 2 rows"):
        ev = EcoVal(n_clusters=12).fit(X[:20], Y[:20], XV, YV)
    assert 2 <= ev.n_clusters_ <= 10
    assert np.isfinite(ev.values_).all()


def test_value_before_fit_raises() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet"):
        EcoVal().value(XV, YV)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((XV[:, :2], YV), "X_new has 2 features; expected 5"),
        ((XV, np.full(60, 7)), "y_new has 60 rows with labels unseen in training"),
        ((np.where(np.isnan(XV), 0, np.nan), YV), "X_new has 300 NaN"),
        ((XV[:0], YV[:0]), "X_new is empty"),
    ],
)
def test_value_rejects_bad_new_rows(args: tuple, message: str) -> None:
    ev = EcoVal(n_clusters=3).fit(X, Y, XV, YV)
    with pytest.raises(InvalidInputError, match=message):
        ev.value(*args)


def test_string_labels_round_trip(tmp_path) -> None:
    names = np.array(["cat", "dog", "eel"])
    ev = EcoVal(n_clusters=3).fit(X, names[Y], XV, names[YV])
    assert list(ev.classes_) == ["cat", "dog", "eel"]
    loaded = EcoVal.load(ev.save(tmp_path / "s"))
    np.testing.assert_array_equal(loaded.value(XV, names[YV]), ev.value(XV, names[YV]))


def test_load_rejects_a_folder_without_state(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="does not hold a saved EcoVal state"):
        EcoVal.load(tmp_path)
