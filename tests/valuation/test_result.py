from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ecoval_ops.valuation import EcoVal, ValuationResult
from ecoval_ops.valuation.result import SUSPECT_ODDS, TWO_CLASS_SUSPECT_ODDS


def test_result_to_arrow_has_the_row_value_columns(small_data) -> None:
    ev = EcoVal(n_clusters=3).fit(*small_data)
    table = ev.result_.to_arrow(np.arange(300), "row_id")
    assert table.column_names == [
        "row_id",
        "ecoval_value",
        "ecoval_intrinsic",
        "ecoval_extrinsic",
        "ecoval_cluster",
        "ecoval_cluster_value",
        "ecoval_suspect",
        "ecoval_mode",
        "ecoval_suggested_label",
        "ecoval_label_confidence",
    ]
    assert table.schema.field("ecoval_cluster").type == pa.int32()
    suspect = table.column("ecoval_suspect").to_numpy(zero_copy_only=False)
    # Suspect: the supported label scores at least 3 times the row's own (a stricter flag than alpha < 0).
    odds = ev.result_.label_confidence / ((1 + ev.intrinsic_) / 2)
    np.testing.assert_array_equal(suspect, odds >= 3)
    assert 0 < suspect.sum() < int((ev.intrinsic_ < 0).sum())
    assert set(table.column("ecoval_mode").to_pylist()) == {"in_sample"}
    # A suggestion (in the labels' type) and its confidence on suspect rows only.
    suggested = table.column("ecoval_suggested_label")
    assert suggested.type == pa.int64() and suggested.null_count == len(suspect) - suspect.sum()
    confidence = np.asarray(table.column("ecoval_label_confidence").to_pylist(), dtype=float)
    assert np.isnan(confidence[~suspect]).all() and ((confidence[suspect] > 0) & (confidence[suspect] <= 1)).all()


def test_two_classes_flag_at_lower_odds_and_the_saved_model_keeps_them(tmp_path) -> None:
    # With two classes every flip lands in the one other class and keeps more of its vote: the
    # flag reads odds of 1.5 there (an agreement of at most 0.4), 3 with more classes.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.5 * rng.normal(size=500) > 0).astype(int) ^ (rng.random(500) < 0.2)
    ev = EcoVal(n_clusters=4, seed=0).fit(X[:400], y[:400], X[400:], y[400:])
    agree = (1 + ev.intrinsic_) / 2
    odds = ev.result_.label_confidence / agree
    suspect = ev.result_.suspect
    np.testing.assert_array_equal(suspect, odds >= TWO_CLASS_SUSPECT_ODDS)
    assert np.sum(odds >= SUSPECT_ODDS) < suspect.sum() < np.sum(ev.intrinsic_ < 0)
    np.testing.assert_array_equal(ev.value_rows(X[:400], y[:400], train_index=np.arange(400)).suspect, suspect)
    loaded = EcoVal.load(ev.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.result_.suspect, suspect)
    np.testing.assert_array_equal(loaded.value_rows(X[400:], y[400:]).suspect, ev.value_rows(X[400:], y[400:]).suspect)


def test_only_ecoval_results_know_suspects() -> None:
    with pytest.raises(ValueError, match="a data_oob result has no"):
        _ = ValuationResult(np.zeros(3), method="data_oob").suspect
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        ValuationResult(np.zeros(3), n_classes=1)


def test_the_suggested_label_is_the_vote_with_its_prior() -> None:
    from ecoval_ops.valuation.propagation_state import label_scores

    dist = np.array([[1.0, 1.0, 1.0, 4.0], [1.0, 2.0, 2.0, 2.0]])
    labels = np.array([[2, 2, 0, 0], [1, 0, 0, 0]])
    flat = np.full((2, 3), 1 / 3)
    scores = label_scores(dist, labels, 1.0, flat, 0.0)
    # Weights exp(-((d/h)^2 - min)): row 0's far neighbour weighs exp(-15); in row 1 the nearest
    # neighbour (weight 1) outvotes three at distance 2 (exp(-3) each).
    assert np.argmax(scores, axis=1).tolist() == [2, 1]
    np.testing.assert_allclose(scores[0, 2], 2 / (3 + np.exp(-15.0)))
    np.testing.assert_allclose(scores[1, 1], 1 / (1 + 3 * np.exp(-3.0)))
    # The prior counts as m0 pseudo-neighbours: 5 of them sure of class 0 outvote row 1's 4 neighbours.
    sure = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with_prior = label_scores(dist, labels, 1.0, sure, 5.0)
    assert np.argmax(with_prior, axis=1).tolist() == [2, 0]
    np.testing.assert_allclose(with_prior.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("values", np.array([1.0, np.nan]), "values has 1 non-finite"), ("intrinsic", np.zeros(3), r"shape \(3,\)")],
)
def test_result_rejects_bad_arrays(field: str, value: np.ndarray, message: str) -> None:
    fields = {
        "values": np.zeros(2),
        "intrinsic": np.zeros(2),
        "extrinsic": np.ones(2),
        "clusters": np.zeros(2, dtype=int),
        "cluster_values": np.zeros(2),
        "mode": "in_sample",
    }
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        ValuationResult(**fields)
