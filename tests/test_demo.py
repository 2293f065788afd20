"""The demo's two nights on the in-process engine (make demo runs the Spark one)."""

from __future__ import annotations

import pytest

from ecoval_ops.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow, pytest.mark.slow]


def test_demo_values_a_refit_and_an_incremental_night(tmp_path) -> None:
    result = run_demo(tmp_path / "demo", engine="delta-rs")
    first, second = result.nights
    assert (first.mode, second.mode) == ("refit", "incremental")
    assert first.rows_valued == 1500 and second.rows_valued == 297 and second.n_trainings == 0
    assert result.n_rows == 1797 and result.n_flipped == 180
    assert result.auroc > 0.95 and result.auroc_new > 0.95
    assert result.suspect_recall > 0.9
    # The suggested label brings back most flipped labels it is offered for.
    assert result.flagged_flips > 150 and result.restored > 0.8 * result.flagged_flips
    assert 0 < result.clean_rows < result.n_rows
    # The 5% quarantine: 75 rows, almost all flipped, and the vote's estimate within 10% of the count.
    q = result.quarantine
    assert q["rows_removed"] == 75 and result.quarantine_flipped > 65
    assert abs(q["expected_wrong_labels"] - result.quarantine_flipped) <= 0.1 * result.quarantine_flipped
    assert 0.5 < q["validation_accuracy"] <= 1.0
    again = run_demo(tmp_path / "demo", engine="delta-rs")
    assert again.clean_rows == result.clean_rows
