"""`run_valuation` end to end on a real Delta table with a real MLflow store (delta-rs engine)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient

from ecoval_ops.exceptions import InvalidInputError, StateFormatError
from ecoval_ops.lakehouse import read_watermark
from ecoval_ops.pipeline import run_valuation
from tests.conftest import blob_rows, blobs, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]

ORIGINAL = ["row_id", "f0", "f1", "f2", "label"]


def _checksum(path) -> str:
    t = DeltaTable(str(path)).to_pyarrow_table(columns=ORIGINAL).sort_by("row_id")
    return hashlib.sha256(b"".join(np.asarray(t.column(c)).tobytes() for c in ORIGINAL)).hexdigest()


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 400))
    cfg = run_config(path, tmp_path, engine="delta-rs", n_clusters=4)
    return path, cfg


def test_a_run_leaves_the_process_mlflow_uris_alone(setup, monkeypatch) -> None:
    import mlflow

    # MLflow's set_registry_uri exports MLFLOW_REGISTRY_URI: every later client of the process
    # (and of its children) would then register models in this run's store.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    run_valuation(setup[1])
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (tracking, registry)


def test_refit_then_noop_then_incremental(setup) -> None:
    path, cfg = setup
    first = run_valuation(cfg)
    assert first.mode == "refit" and first.rows_valued == 400 and first.n_trainings == 2 + 4 + 6
    assert first.rows_out_of_sample == pytest.approx(40, abs=20)
    table = DeltaTable(str(path)).to_pyarrow_table()
    assert table.column("ecoval_value").null_count == 0
    percentile = table.column("ecoval_percentile").to_numpy()
    assert percentile.min() >= 0 and percentile.max() <= 1
    checksum = _checksum(path)

    version = DeltaTable(str(path)).version()
    again = run_valuation(cfg)
    assert again.mode == "noop" and DeltaTable(str(path)).version() == version

    write_deltalake(str(path), blob_rows(400, 460), mode="append", schema_mode="merge")
    nightly = run_valuation(cfg)
    assert nightly.mode == "incremental" and nightly.rows_valued == 60 and nightly.n_trainings == 0
    assert nightly.model_version == first.model_version
    after = DeltaTable(str(path)).to_pyarrow_table().sort_by("row_id")
    assert after.num_rows == 460 and after.column("ecoval_value").null_count == 0
    old = after.filter(pa.compute.less(after.column("row_id"), 400))
    np.testing.assert_array_equal(
        old.column("ecoval_value").to_numpy(), table.sort_by("row_id").column("ecoval_value").to_numpy()
    )
    assert read_watermark(path).run_id == nightly.run_id
    # Runs are named after what they did, and describe it as the CLI's summary does.
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    for summary, name in ((first, "train@v0 refit"), (nightly, f"train@v{version + 1} incremental")):
        run = client.get_run(summary.run_id)
        assert run.info.run_name == name
        description = run.data.tags["mlflow.note.content"]
        assert description.startswith(
            f"{summary.mode}: {summary.rows_valued} rows valued ({summary.rows_in_sample} in sample, "
            f"{summary.rows_out_of_sample} out of sample) with {summary.n_trainings} trainings; "
            f"{summary.suspect_share:.1%} flagged suspect"
        )
        assert f"{path}@v" in description
    old_only = DeltaTable(str(path)).to_pyarrow_table(columns=ORIGINAL).sort_by("row_id").slice(0, 400)
    assert hashlib.sha256(b"".join(np.asarray(old_only.column(c)).tobytes() for c in ORIGINAL)).hexdigest() == checksum


def test_a_small_batch_never_refits_on_drift(setup) -> None:
    path, cfg = setup
    run_valuation(cfg)
    write_deltalake(str(path), blob_rows(400, 410, seed=2), mode="append", schema_mode="merge")
    assert run_valuation(cfg).mode == "incremental"


def test_drifted_new_rows_trigger_a_refit(setup) -> None:
    path, cfg = setup
    run_valuation(cfg)
    shifted = blob_rows(400, 460, seed=2)
    write_deltalake(str(path), shifted, mode="append", schema_mode="merge")
    assert run_valuation(cfg).mode == "refit"


def test_mlflow_records(setup) -> None:
    path, cfg = setup
    summary = run_valuation(cfg.with_settings(shards=3, neighbour_search="approx"))
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    parent = client.get_run(summary.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["table"] == str(path) and parent.data.params["features"] == "f0,f1,f2"
    assert {"U_B", "U_empty", "Gamma_alpha", "Gamma_beta", "gamma", "p", "trainings", "suspect_share"} <= set(
        parent.data.metrics
    )
    # The search each cluster used, and the approximate ones' recall@k measured at build.
    assert parent.data.params["neighbour_search"] == "approx"
    assert parent.data.metrics["approx_clusters"] == parent.data.metrics["p"]
    assert 0.5 <= parent.data.metrics["neighbour_recall"] <= 1.0
    assert parent.data.tags["ecoval.mode"] == "refit" and parent.data.tags["ecoval.table_version_read"] == "0"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["shard-0", "shard-1", "shard-2"]
    masks = sum(int(c.data.params["trainings"]) for c in children)
    # Each shard after the first fits the all-rows model once more as its warm start.
    assert masks == 2 + 4 + 6 and summary.n_trainings == masks + 2
    (source,) = parent.inputs.dataset_inputs
    # MLflow's DeltaDatasetSource leaves out version 0 (it tests the version for truth), so the
    # version read is also in the dataset's name.
    assert source.dataset.source_type == "delta_table" and str(path) in source.dataset.source
    assert source.dataset.name == "train@v0"
    version = client.get_model_version_by_alias("ecoval_train", "current")
    assert str(version.version) == summary.model_version


def test_bad_input_leaves_the_table_as_it_was(setup) -> None:
    path, cfg = setup
    before = (DeltaTable(str(path)).version(), _checksum(path))
    bad = cfg.with_settings(features=("f0", "nope"))
    with pytest.raises(InvalidInputError, match=r"has no column\(s\) \['nope'\]"):
        run_valuation(bad)
    assert (DeltaTable(str(path)).version(), _checksum(path)) == before


def _older_state_format(cfg, tmp_path, version: str) -> None:
    """What the release before the neighbour index registered: the same files, state format 3."""
    saved = [f for f in tmp_path.rglob("ecoval.json") if "format_version" in f.read_text()]
    assert saved
    for meta in saved:
        meta.write_text(meta.read_text().replace('"format_version": 4', '"format_version": 3'))


def _older_hold_out_split(cfg, tmp_path, version: str) -> None:
    """What the release before the key-hash split registered: a version without the ecoval.holdout tag."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert client.get_model_version(cfg.registered_model_name, version).tags["ecoval.holdout"]
    client.delete_model_version_tag(cfg.registered_model_name, version, "ecoval.holdout")


@pytest.mark.parametrize(
    ("older", "reason"),
    [
        (_older_state_format, "state format 3; this version reads 4"),
        (_older_hold_out_split, "hold-out split blake2b; this version holds out by siphash"),
    ],
    ids=["state format", "hold-out split"],
)
def test_a_model_registered_by_an_older_release_is_refitted(setup, tmp_path, caplog, older, reason) -> None:
    path, cfg = setup
    older(cfg, tmp_path, run_valuation(cfg).model_version)
    write_deltalake(str(path), blob_rows(400, 410), mode="append", schema_mode="merge")
    with pytest.raises(StateFormatError, match=rf"{reason}.*; run with --refit auto"):
        run_valuation(cfg.with_settings(refit="never"))
    summary = run_valuation(cfg)
    assert summary.mode == "refit" and summary.rows_valued == 410
    assert reason in caplog.text and "cannot value new rows" in caplog.text and "refitting" in caplog.text


def test_embedding_column_and_the_registered_pyfunc(tmp_path) -> None:
    import mlflow

    X, y = blobs(300, n_classes=2, d=4, noise=0.1, seed=5)
    path = tmp_path / "emb"
    write_deltalake(
        str(path),
        pa.table({"id": np.arange(300), "emb": pa.array([list(r) for r in X], pa.list_(pa.float32())), "y": y}),
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = run_config(path, tmp_path, engine="delta-rs", embedding=True, n_clusters=3)
    summary = run_valuation(cfg)
    assert summary.mode == "refit" and summary.rows_valued == 300
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model_name}@current")
    frame = DeltaTable(str(path)).to_pandas(columns=["id", "emb", "y", "ecoval_value", "ecoval_mode"])
    new_rows = frame[frame.ecoval_mode == "out_of_sample"]
    predicted = model.predict(new_rows[["emb", "y"]])
    np.testing.assert_allclose(predicted["ecoval_value"].to_numpy(), new_rows["ecoval_value"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        ([[1.0, 2.0]] * 39 + [None], "embedding column 'emb' of .* has 1 null values"),
        ([[1.0, 2.0]] * 39 + [[1.0]], "must share one non-zero length; found \\[1, 2\\]"),
        ([[1.0, 2.0]] * 39 + [[float("nan"), 1.0]], "1 rows with NaN or infinite entries"),
    ],
)
def test_bad_embeddings_are_named(tmp_path, embeddings, message) -> None:
    path = tmp_path / "emb"
    write_deltalake(str(path), pa.table({"id": np.arange(40), "emb": embeddings, "y": [0, 1] * 20}))
    cfg = run_config(path, tmp_path, engine="delta-rs", embedding=True)
    with pytest.raises(InvalidInputError, match=message):
        run_valuation(cfg)
    assert DeltaTable(str(path)).version() == 0


def test_trainings_in_the_child_process_value_rows_as_in_process(tmp_path, monkeypatch) -> None:
    """Large tables train in a spawned child (the shards, the reference fit, the review's curve): same values."""
    from ecoval_ops.pipeline import run as run_module

    columns = ["row_id", "ecoval_value", "ecoval_suspect", "ecoval_cluster"]
    valued = {}
    for name, threshold in (("in_process", 10**9), ("child", 0)):
        monkeypatch.setattr(run_module, "ISOLATED_TRAINING_ROWS", threshold)
        path = tmp_path / name / "train"
        write_deltalake(str(path), blob_rows(0, 300))
        summary = run_valuation(run_config(path, tmp_path / name, engine="delta-rs", n_clusters=3, shards=2))
        assert summary.mode == "refit" and summary.rows_valued == 300
        valued[name] = DeltaTable(str(path)).to_pyarrow_table(columns=columns).sort_by("row_id")
    assert valued["child"].equals(valued["in_process"])
