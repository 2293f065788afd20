"""Noisy-label detection on a real shared dataset, against the floor of the spec's figures.

Protocol P3 of benchmarks.md (2dplanes, 2000/200 train/valid, 10% flipped labels). The method
spec's prototype reached AUROC 0.91 there and exact KNN-Shapley 0.90; this implementation gave
0.938 / 0.912 / 0.919 on seeds 0-2. The floor of 0.88 leaves room for seed variance (standard
deviation 0.011 over those seeds) while failing any change that loses the signal.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecoval_ops.valuation import EcoVal

pytestmark = pytest.mark.slow


def _flip(y: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    noisy = rng.choice(y.size, size=round(rate * y.size), replace=False)
    out = y.copy()
    out[noisy] = 1 - out[noisy]
    return out, noisy


def test_noisy_label_auroc_on_2dplanes(shared_dataset) -> None:
    X, y = shared_dataset("2dplanes_727")
    rng = np.random.default_rng(0)
    order = rng.permutation(y.size)
    train, val = order[:2000], order[2000:2200]
    y_train, noisy = _flip(y[train], 0.1, rng)
    y_val, _ = _flip(y[val], 0.1, rng)
    ev = EcoVal(seed=0).fit(X[train], y_train, X[val], y_val)
    truth = np.zeros(2000, dtype=bool)
    truth[noisy] = True
    auroc = roc_auc_score(truth, -ev.values_)
    assert auroc >= 0.88, f"AUROC {auroc:.3f} fell below the floor 0.88"
    assert ev.n_trainings_ <= 80
