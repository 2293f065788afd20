"""The quarantine preview's cuts (valuation/quarantine.py) and the removal curve's new points."""

from __future__ import annotations

import numpy as np
import pytest

from ecoval_ops.valuation.quarantine import NO_CUT, SUSPECT_CUT, preview, wrong_label_chance
from ecoval_ops.valuation.removal import RemovalCurve, removal_curve
from tests.conftest import blobs


def test_wrong_label_chance_is_the_votes_share_for_other_labels() -> None:
    np.testing.assert_allclose(wrong_label_chance(np.array([1.0, 0.0, -1.0, -0.5])), [0.0, 0.5, 1.0, 0.75])


def test_each_cut_removes_the_lowest_values_and_sums_their_chances() -> None:
    rng = np.random.default_rng(3)
    values, alpha = rng.normal(size=200), rng.uniform(-1, 1, size=200)
    suspect = alpha < -0.6
    curve = RemovalCurve((0.01, 0.05), 0.8, (0.7, 0.6), (0.81, 0.83), without_suspects=0.85)
    cuts = {c.cut: c for c in preview(values, alpha, suspect, curve, percents=(1, 5, 10))}
    assert list(cuts) == [NO_CUT, "1%", "5%", "10%", SUSPECT_CUT]
    assert cuts[NO_CUT].validation_accuracy == 0.8 and cuts[NO_CUT].rows_removed == 0
    lowest = np.argsort(values)[:10]
    assert cuts["5%"].rows_removed == 10
    assert cuts["5%"].expected_wrong_labels == pytest.approx(((1 - alpha[lowest]) / 2).sum())
    assert cuts["5%"].validation_accuracy == 0.83 and cuts["10%"].validation_accuracy is None
    assert cuts[SUSPECT_CUT].rows_removed == suspect.sum()
    assert cuts[SUSPECT_CUT].percent == pytest.approx(100 * suspect.mean())
    assert cuts[SUSPECT_CUT].validation_accuracy == 0.85
    assert "lowest 5%: 10 rows" in cuts["5%"].line() and "n/a" in cuts["10%"].line()
    assert all(c.validation_accuracy is None for c in preview(values, alpha, suspect))


def test_the_curve_retrains_without_the_suspects_and_reads_old_curves() -> None:
    X, y = blobs(300, n_classes=3, d=4, noise=0.1, seed=2)
    drop = np.zeros(300, dtype=bool)
    drop[:30] = True
    curve = removal_curve(X[:240], y[:240], -np.arange(240.0), X[240:], y[240:], n_classes=3, drop=drop[:240])
    assert curve.without_suspects is not None and 0 < curve.without_suspects <= 1
    again = RemovalCurve.from_dict(curve.to_dict())
    assert again == curve
    old = {"shares": [0.05], "full": 0.9, "top": [0.8], "bottom": [0.91]}
    assert RemovalCurve.from_dict(old).without_suspects is None
    assert RemovalCurve.from_dict(old).without_lowest(0.05) == 0.91
