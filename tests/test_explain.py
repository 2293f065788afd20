"""`ecoval explain`: a row's value decomposed, and the reference rows it was compared with."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.explain import explain_row
from ecoval_ops.pipeline import run_valuation
from tests.conftest import blob_rows, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


@pytest.fixture
def valued(tmp_path):
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=3)
    run_valuation(cfg)
    return cfg


def _ecoval(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecoval_ops.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_a_row_is_its_cluster_share_plus_its_kappa_term(valued) -> None:
    table = DeltaTable(str(valued.source.table)).to_pandas()
    for mode in ("in_sample", "out_of_sample"):
        row = table[table.ecoval_mode == mode].sort_values("ecoval_value").iloc[0]
        e = explain_row(str(valued.source.table), str(row.row_id), tracking_uri=valued.tracking_uri)
        assert (e.key, e.mode, e.cluster, e.label) == (row.row_id, mode, row.ecoval_cluster, row.label)
        # v_i = share_c* + kappa (alpha_i beta_i - mean_c x)
        assert e.value == pytest.approx(e.cluster_share + e.kappa * (e.alpha * e.beta - e.cluster_mean_x), abs=1e-12)
        assert len(e.neighbours) == 20 and row.row_id not in [n.key for n in e.neighbours]
        members = table.set_index("row_id").loc[[n.key for n in e.neighbours]]
        assert (members.ecoval_cluster == e.cluster).all() and (
            members.label.to_numpy() == [n.label for n in e.neighbours]
        ).all()
        similarity = [n.similarity for n in e.neighbours]
        assert similarity == sorted(similarity, reverse=True) and 0 < similarity[-1] <= similarity[0] <= 1
        # alpha is the vote of those neighbours, weighted by similarity, with the label prior as m0 more.
        agree = np.dot(similarity, [n.label == e.label for n in e.neighbours]) / sum(similarity)
        k, m0 = len(e.neighbours), e.prior_weight
        assert e.alpha == pytest.approx(2 * (k * agree + m0 * e.label_prior) / (k + m0) - 1, abs=1e-9)


def test_explain_from_the_command_line(valued) -> None:
    table = DeltaTable(str(valued.source.table)).to_pandas()
    suspect = table[table.ecoval_suspect].iloc[0]
    args = ["explain", "--table", str(valued.source.table), "--mlflow-uri", valued.tracking_uri]
    out = _ecoval(*args, "--key", str(suspect.row_id), cwd=valued.source.table.parent.local_path)
    assert out.returncode == 0, out.stderr
    assert f"row {suspect.row_id} of" in out.stdout and "SUSPECT" in out.stdout
    suggested = int(suspect.ecoval_suggested_label)  # pandas holds the nullable column as floats
    assert f"suggested label {suggested}" in out.stdout
    as_json = json.loads(
        _ecoval(*args, "--key", str(suspect.row_id), "--json", cwd=valued.source.table.parent.local_path).stdout
    )
    assert as_json["suggested_label"] == suggested and len(as_json["neighbours"]) == 20
    assert "label prior" in out.stdout and 0 <= as_json["label_prior"] <= 1

    write_deltalake(str(valued.source.table), blob_rows(300, 301), mode="append", schema_mode="merge")
    cases = [
        ("99999", "has no row with row_id = '99999'"),
        ("x", "is not a value of the key column's type"),
        ("300", "has not been valued yet"),
    ]
    for key, message in cases:
        bad = _ecoval(*args, "--key", key, cwd=valued.source.table.parent.local_path)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_explain_without_a_valuation_is_one_line(tmp_path) -> None:
    path = tmp_path / "fresh"
    write_deltalake(str(path), blob_rows(0, 10))
    out = _ecoval("explain", "--table", str(path), "--key", "1", cwd=tmp_path)
    assert out.returncode == 2 and "has not been valued yet" in out.stderr and "Traceback" not in out.stderr


def test_explain_a_row_of_a_separate_values_table(tmp_path) -> None:
    path, values = tmp_path / "lake" / "train", tmp_path / "lake" / "train_values"
    write_deltalake(str(path), blob_rows(0, 300))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=3, values_table=str(values))
    run_valuation(cfg)
    e = explain_row(str(values), "7", tracking_uri=cfg.tracking_uri)
    source = DeltaTable(str(path)).to_pandas().set_index("row_id")
    assert e.key == 7 and e.label == source.loc[7, "label"] and len(e.neighbours) == 20
    assert e.value == pytest.approx(e.cluster_share + e.kappa * (e.alpha * e.beta - e.cluster_mean_x), abs=1e-12)
