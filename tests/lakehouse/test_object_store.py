"""Tables in an object store (issue 25): runs on ``s3://`` tables against a real S3 server (s3proxy).

Every table here is keyed by UUID strings. The same rows valued on S3 and on local disk must give
the same values; bad credentials, a missing bucket, an unreachable endpoint and a prefix without a
Delta log each stop a run with one line, exit 2, nothing written and no secret echoed.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import blob_rows, run_config, uuid_keyed
from tests.s3 import SECRET

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]

VALUES = ["row_id", "ecoval_value", "ecoval_intrinsic", "ecoval_extrinsic", "ecoval_cluster", "ecoval_suspect"]


def _values(uri: str) -> pa.Table:
    return DeltaTable(uri).to_pyarrow_table(columns=VALUES).sort_by("row_id")


def _config(table: str, tmp_path: Path, **flags):
    return run_config(table, tmp_path, engine="delta-rs", **flags)


def _objects(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_refit_and_a_night_on_s3_value_rows_as_on_local_disk(s3, tmp_path) -> None:
    from ecoval_ops.pipeline.run import run_valuation

    remote, local = f"{s3.bucket('same-rows')}/train", str(tmp_path / "lake" / "train")
    for uri in (remote, local):
        write_deltalake(uri, uuid_keyed(blob_rows(0, 300)))
    for uri, name in ((remote, "s3"), (local, "local")):
        (tmp_path / name).mkdir()
        assert run_valuation(_config(uri, tmp_path / name)).mode == "refit"
        write_deltalake(uri, uuid_keyed(blob_rows(300, 340)), mode="append", schema_mode="merge")
        night = run_valuation(_config(uri, tmp_path / name))
        assert night.mode == "incremental" and night.rows_valued == 40
    # The workspace lies beside the table in the bucket: its embeddings stay, each run's folder went with it.
    beside = {o.split("/")[2] for o in _objects(s3.root / "same-rows") if not o.startswith("train/")}
    assert len(beside) == 1 and beside.pop().startswith("embeddings_")
    on_s3, on_disk = _values(remote), _values(local)
    assert on_s3.num_rows == 340 and on_s3.column("ecoval_value").null_count == 0
    assert on_s3.column("row_id").equals(on_disk.column("row_id"))
    for name in VALUES[1:]:
        np.testing.assert_allclose(
            on_s3.column(name).to_numpy(zero_copy_only=False).astype(float),
            on_disk.column(name).to_numpy(zero_copy_only=False).astype(float),
            rtol=0,
            atol=1e-12,
        )


def test_values_go_to_a_values_table_in_the_bucket_and_the_source_is_untouched(s3, tmp_path) -> None:
    from ecoval_ops.pipeline.run import run_valuation

    bucket = s3.bucket("values-table")
    write_deltalake(f"{bucket}/train", uuid_keyed(blob_rows(0, 200)))
    summary = run_valuation(_config(f"{bucket}/train", tmp_path, values_table=f"{bucket}/train_values"))
    assert summary.rows_valued == 200
    assert DeltaTable(f"{bucket}/train").version() == 0
    values = _values(f"{bucket}/train_values")
    assert values.num_rows == 200 and len(set(values.column("row_id").to_pylist())) == 200


def test_the_workspace_of_an_s3_table_lies_beside_it_in_the_bucket(tmp_path) -> None:
    from ecoval_ops.pipeline.workspace import Workspace
    from ecoval_ops.storage import TableRef

    cfg = run_config("s3://lake/nightly/train", tmp_path, engine="delta-rs", storage_options="AWS_REGION=eu-west-1")
    root = Workspace.for_config(cfg).root
    assert root == TableRef.of("s3://lake/nightly/_ecoval/train") and root.option("AWS_REGION") == "eu-west-1"
    staged = run_config("s3://lake/train", tmp_path, engine="delta-rs", staging_dir="s3a://scratch/ecoval/")
    assert Workspace.for_config(staged).root == TableRef.of("s3a://scratch/ecoval")


def test_steps_hand_each_other_the_workspace_through_a_scratch_bucket(s3, tmp_path) -> None:
    # The staging prefix is in another bucket than the table, as a team's scratch bucket would
    # be; every part a step leaves for the next (plan, shards, models, Parquet inputs and values)
    # is an object there, so tasks on hosts that share nothing but the store can run the steps.
    from ecoval_ops.engines import DeltaRsEngine
    from ecoval_ops.pipeline import fitting, steps

    table, scratch = f"{s3.bucket('hosts')}/train", s3.bucket("scratch")
    write_deltalake(table, uuid_keyed(blob_rows(0, 300)))
    cfg = _config(table, tmp_path, staging_dir=f"{scratch}/ecoval/train", shards=2)
    engine = DeltaRsEngine()
    run = steps.detect(cfg, engine).run
    assert steps.embed(run, engine) == 300
    ref = steps.RunRef.from_dict(steps.decide(run, engine).to_dict())
    for index in fitting.cluster(ref, engine):
        fitting.train_shard(ref, index)
    fitted = fitting.fit_model(ref, engine)
    assert steps.propagate(fitted, engine) == 300
    prefix = f"ecoval/train/runs/{ref.run_id}/"
    parts = {o.removeprefix(prefix).split("/")[0] for o in _objects(s3.root / "scratch") if o.startswith(prefix)}
    assert parts == {"plan", "shards", "reference_model", "inputs", "centred_model", "removal_curve.json", "model",
                     "values"}  # fmt: skip
    written = steps.write(fitted, engine)
    assert steps.report(fitted, engine, written)["rows_valued"] == 300
    assert [o for o in _objects(s3.root / "scratch") if "/runs/" in o] == []
    assert _values(table).column("ecoval_value").null_count == 0
    assert list(tmp_path.rglob("_ecoval*")) == []
    (tmp_path / "again").mkdir()
    again = _config(table, tmp_path / "again", staging_dir=f"{scratch}/ecoval/train")
    assert steps.decide(steps.detect(again, engine).run, engine).mode == "noop"


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("credentials", "access to s3://bad-input/train was refused: check the credentials"),
        ("bucket", "bucket 'no-such-bucket' of s3://no-such-bucket/train does not exist"),
        ("endpoint", "cannot reach http://127.0.0.1:9 for s3://bad-input/train"),
        ("no_log", "s3://bad-input/empty is not a Delta table (no _delta_log found)"),
    ],
)
def test_bad_object_store_input_is_one_line_without_secrets_and_writes_nothing(
    s3, tmp_path, capsys, monkeypatch, problem, message
) -> None:
    from ecoval_ops.cli import main

    bucket = s3.bucket("bad-input")
    write_deltalake(f"{bucket}/train", uuid_keyed(blob_rows(0, 100)))
    (s3.root / "bad-input" / "empty").mkdir()
    before = _objects(s3.root)
    table = {"bucket": "s3://no-such-bucket/train", "no_log": f"{bucket}/empty"}.get(problem, f"{bucket}/train")
    if problem == "credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + SECRET)
    if problem == "endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--engine", "delta-rs", "--table", table, "--key", "row_id", "--label", "label",
                 "--features", "f0,f1,f2"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 2 and out.err.startswith(f"ecoval: error: {message}"), out.err
    assert len(out.err.strip().splitlines()) == 1 and SECRET not in out.err + out.out
    assert _objects(s3.root) == before
    assert not (tmp_path / "mlflow.db").exists() or SECRET.encode() not in (tmp_path / "mlflow.db").read_bytes()


def test_secret_storage_options_never_reach_mlflow_logs_or_the_run_reference(s3, tmp_path, monkeypatch, caplog) -> None:
    import logging

    from ecoval_ops.engines import engine_for
    from ecoval_ops.pipeline import steps
    from ecoval_ops.pipeline.run import run_valuation

    # The secret comes from the storage_options setting only, as a Variable or YAML map would give it.
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    bucket = s3.bucket("secrets")
    write_deltalake(f"{bucket}/train", uuid_keyed(blob_rows(0, 200)), storage_options=s3.env())
    cfg = _config(f"{bucket}/train", tmp_path, storage_options=f"AWS_SECRET_ACCESS_KEY={SECRET},AWS_REGION=us-east-1")
    caplog.set_level(logging.DEBUG)
    summary = run_valuation(cfg)
    assert summary.rows_valued == 200

    detected = steps.detect(cfg, engine_for(cfg))
    assert SECRET not in str(detected.to_dict()) and SECRET not in str(cfg.loggable()) and SECRET not in repr(cfg)
    assert SECRET not in caplog.text
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []  # the MLflow store, its artifacts and the workspace


def _night(table: str, home: str, env: dict[str, str]) -> str:
    """One run in a spawned process (delta-rs's runtime cannot live in a forked child)."""
    os.environ.update(env)
    from ecoval_ops.pipeline.run import run_valuation
    from tests.conftest import run_config

    cfg = run_config(table, Path(home), engine="delta-rs")
    return run_valuation(cfg).mode


def test_two_delta_rs_runs_on_one_s3_table_at_once_leave_one_row_per_key(s3, tmp_path) -> None:
    table = f"{s3.bucket('two-runs')}/train"
    write_deltalake(table, uuid_keyed(blob_rows(0, 300)))
    homes = [tmp_path / name for name in ("a", "b")]
    for home in homes:
        home.mkdir()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        modes = pool.starmap(_night, [(table, str(home), s3.env()) for home in homes])
    assert "refit" in modes and set(modes) <= {"refit", "noop"}
    data = DeltaTable(table).to_pyarrow_table()
    assert data.num_rows == 300 and len(set(data.column("row_id").to_pylist())) == 300
    assert data.column("ecoval_value").null_count == 0


def _merges(uri: str) -> dict[int, str]:
    """Table version -> run id of each value MERGE in the history (delta-rs and delta-spark commits)."""
    import json

    out = {}
    for commit in DeltaTable(uri).history():
        metadata = {**commit, **json.loads(commit.get("userMetadata") or "{}")}
        if "ecoval.run_id" in metadata:
            out[int(commit["version"])] = metadata["ecoval.run_id"]
    return out


@pytest.mark.slow
@pytest.mark.spark
def test_a_spark_and_a_delta_rs_run_on_one_s3_table_commit_one_after_the_other(s3, tmp_path) -> None:
    # `ecoval run` from a shell with the AWS variables set, as the README shows, on each engine at
    # once. The test holds the table's write lease until both runs have their values ready, so both
    # reach their MERGE together: the lease lets one commit, then the other (Delta's Spark writer on
    # S3 would otherwise overwrite a concurrent commit). Both value the same version with the same
    # seed, so their MERGEs, one after the other in the history, carry the same values.
    import time

    from ecoval_ops.lakehouse.leases import write_lease
    from ecoval_ops.storage import TableRef

    table = f"{s3.bucket('two-engines')}/train"
    write_deltalake(table, uuid_keyed(blob_rows(0, 300)))
    runs = {}
    with write_lease(TableRef.of(table)):
        for engine in ("spark", "delta-rs"):
            (tmp_path / engine).mkdir()
            runs[engine] = subprocess.Popen(
                [sys.executable, "-m", "ecoval_ops.cli", "run", "--engine", engine, "--table", table,
                 "--key", "row_id", "--label", "label", "--features", "f0,f1,f2", "--spark-cores", "2"],
                cwd=tmp_path / engine, env={**os.environ, **s3.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 600
        # Both workspaces lie beside the table in the bucket; each run's values count once marked done.
        while len(list((s3.root / "two-engines" / "_ecoval" / "train" / "runs").glob("*/values/_ecoval_done"))) < 2:
            assert all(r.poll() is None for r in runs.values()), {e: r.communicate() for e, r in runs.items()}
            assert time.monotonic() < deadline, "the runs did not reach their MERGE"
            time.sleep(1)
        assert _merges(table) == {}
    for engine, run in runs.items():
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, f"{engine}: {err[-3000:]}"
        assert SECRET not in out + err and "Traceback" not in err
    merges = _merges(table)
    assert len(merges) == 2 and len(set(merges.values())) == 2
    first, second = (
        DeltaTable(table, version=v).to_pyarrow_table(columns=VALUES).sort_by("row_id") for v in sorted(merges)
    )
    assert second.num_rows == 300 and len(set(second.column("row_id").to_pylist())) == 300
    assert second.column("ecoval_value").null_count == 0 and first.column("row_id").equals(second.column("row_id"))
    np.testing.assert_allclose(
        first.column("ecoval_value").to_numpy(), second.column("ecoval_value").to_numpy(), rtol=0, atol=1e-9
    )
