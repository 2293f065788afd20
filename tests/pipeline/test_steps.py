"""The pipeline steps one by one, as the Airflow tasks call them: references in, retries safe."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient

from ecoval_ops.pipeline import DeltaRsEngine, fitting, run_valuation, steps
from ecoval_ops.pipeline.workspace import Workspace
from tests.conftest import blob_rows, run_config

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "lake" / "train"
    write_deltalake(str(path), blob_rows(0, 300))
    return run_config(path, tmp_path, engine="delta-rs", n_clusters=3, shards=2)


def test_each_step_can_be_retried_without_repeating_work(cfg) -> None:
    engine = DeltaRsEngine()
    run = steps.Detection.from_dict(steps.detect(cfg, engine).to_dict()).run
    assert run.config == cfg and run.table_version == 0
    assert steps.embed(run, engine) == 300
    assert steps.embed(run, engine) == 0
    ref = steps.RunRef.from_dict(steps.decide(run, engine, run_key="dag-run-1").to_dict())
    assert ref.mode == "refit" and ref.run_id is not None and ref.run == run
    assert steps.decide(run, engine, run_key="dag-run-1").run_id == ref.run_id
    shards = fitting.cluster(ref, engine)
    assert shards == [0, 1] and fitting.cluster(ref, engine) == shards
    ws = Workspace.for_config(cfg)
    for index in shards:
        fitting.train_shard(ref, index)
    shard = ws.shard(ref.run_id, 0).local_path
    stamp = shard.stat().st_mtime_ns
    fitting.train_shard(ref, 0)
    assert shard.stat().st_mtime_ns == stamp
    fitted = fitting.fit_model(ref, engine)
    assert fitting.fit_model(ref, engine).model_version == fitted.model_version == "1"
    assert steps.propagate(fitted, engine) == 300 == steps.propagate(fitted, engine)
    written = steps.write(fitted, engine)
    assert written is not None and steps.write(fitted, engine) is None
    figures = steps.report(fitted, engine, written)
    assert figures["rows_valued"] == 300 and figures["n_trainings"] == (2 + 3 + 3) + 1
    assert not ws.exists(ws.run(ref.run_id))

    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    children = client.search_runs(
        [client.get_run(ref.run_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{ref.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["shard-0", "shard-1"]
    assert client.get_run(ref.run_id).info.status == "FINISHED"
    assert len(client.search_model_versions(f"name = '{cfg.registered_model_name}'")) == 1


def test_fit_refuses_to_run_before_every_shard(cfg) -> None:
    from ecoval_ops.exceptions import EcovalError

    engine = DeltaRsEngine()
    run = steps.detect(cfg, engine).run
    steps.embed(run, engine)
    ref = steps.decide(run, engine)
    fitting.cluster(ref, engine)
    fitting.train_shard(ref, 1)
    with pytest.raises(EcovalError, match=r"shards \[0\] of run .* have not finished"):
        fitting.fit_model(ref, engine)


def test_only_new_rows_are_embedded(cfg) -> None:
    run_valuation(cfg)
    write_deltalake(str(cfg.source.table), blob_rows(300, 340), mode="append", schema_mode="merge")
    engine = DeltaRsEngine()
    run = steps.detect(cfg, engine).run
    assert steps.embed(run, engine) == 40
    target = run.embeddings_table()
    assert target is not None and DeltaTable(str(target)).to_pyarrow_table().num_rows == 340


def _digits_table(n: int, *, png: bool) -> pa.Table:
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:n]
    if png:
        pixels = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray((image * 15).astype(np.uint8)).save(buffer, format="PNG")
            pixels.append(buffer.getvalue())
        column = pa.array(pixels, pa.binary())
    else:
        column = pa.array([list(image.ravel()) for image in images], pa.list_(pa.float64()))
    return pa.table({"id": np.arange(n), "image": column, "label": digits.target[:n]})


@pytest.fixture
def weights(tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "mobilenet_v3_small.pt"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), path)
    return path


def _image_config(tmp_path, rows: pa.Table, weights, model: str):
    from ecoval_ops.config import load_config

    path = tmp_path / "digits"
    write_deltalake(str(path), rows)
    return load_config(
        None,
        table=str(path),
        key="id",
        label="label",
        image_col="image",
        embedder=f"torchvision:{model}",
        weights=str(weights),
        engine="delta-rs",
        n_clusters=3,
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )


@pytest.mark.slow
@pytest.mark.parametrize("png", [False, True], ids=["pixel-arrays", "png-bytes"])
def test_torchvision_embedder_values_images(tmp_path, weights, png, monkeypatch) -> None:
    from ecoval_ops.lakehouse.embedders import TorchvisionEmbedder

    hashed = []
    fingerprint = TorchvisionEmbedder.fingerprint
    monkeypatch.setattr(TorchvisionEmbedder, "fingerprint", lambda self: hashed.append(1) or fingerprint(self))
    cfg = _image_config(tmp_path, _digits_table(160, png=png), weights, "mobilenet_v3_small")
    path = cfg.source.table
    summary = run_valuation(cfg)
    assert summary.mode == "refit" and summary.rows_valued == 160
    assert len(hashed) == 1  # the weights file is hashed once per run, when detect pins it
    target = steps.detect(cfg, DeltaRsEngine()).run.embeddings_table()
    assert target is not None
    embeddings = DeltaTable(str(target)).to_pyarrow_table()
    # mobilenet_v3_small without its last linear layer: the 1024-d penultimate features.
    assert embeddings.num_rows == 160 and len(embeddings.column("ecoval_embedding")[0]) == 1024
    assert DeltaTable(str(path)).to_pyarrow_table().column("ecoval_value").null_count == 0


def test_weights_that_do_not_fit_the_model_are_named(tmp_path, weights) -> None:
    from ecoval_ops.exceptions import InvalidInputError

    cfg = _image_config(tmp_path, _digits_table(20, png=False), weights, "resnet18")
    path = cfg.source.table
    with pytest.raises(InvalidInputError, match="do not fit torchvision:resnet18"):
        run_valuation(cfg)
    assert DeltaTable(str(path)).version() == 0


def test_new_rows_are_found_in_files_older_than_the_value_columns(cfg) -> None:
    from ecoval_ops.lakehouse import ensure_value_columns
    from ecoval_ops.lakehouse.source import read_rows

    # The columns exist in the schema only: the data file predates them (a run killed after
    # adding them), and a pushed-down `IS NULL` filter alone would find no new row there.
    ensure_value_columns(cfg.source.table, label=cfg.source.label)
    engine = DeltaRsEngine()
    run = steps.detect(cfg, engine).run
    steps.embed(run, engine)
    rows = read_rows(run.columns, cfg.source.table, embeddings=run.embeddings_table(), only_new=True)
    assert len(rows.keys) == 300 and engine.new_rows(run).rows == 300
