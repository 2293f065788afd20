"""Files under a TableRef (ecoval_ops.files) and the workspace parts built on them, locally and in S3.

A part a killed step left half-written must never count as written: locally it was never renamed
into place, in S3 its folder has no marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ecoval_ops import files
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.pipeline.workspace import Workspace
from ecoval_ops.storage import TableRef
from tests.s3 import SECRET


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> TableRef:
    """A workspace root on local disk, or in a fresh bucket of the tests' S3 server."""
    if request.param == "local":
        return TableRef.of(tmp_path / "ws")
    s3 = request.getfixturevalue("s3")
    return TableRef.of(f"{s3.bucket('files')}/ecoval/train")


def _folder(path: Path, **contents: str) -> None:
    for name, text in contents.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)


def test_a_part_counts_once_written_whole_and_reads_back(root) -> None:
    ws = Workspace(root)
    model, shard = ws.model("r1"), ws.shard("r1", 0)
    assert not ws.exists(model) and not ws.exists(shard)
    with ws.atomic(model) as tmp:
        tmp.mkdir()
        _folder(tmp, **{"state.json": '{"p": 3}', "arrays/x.npy": "x"})
    with ws.atomic(shard) as tmp, open(tmp, "wb") as f:
        np.save(f, np.arange(3.0))
    assert ws.exists(model) and ws.exists(shard)
    assert ws.read(model, lambda p: json.loads((p / "state.json").read_text())) == {"p": 3}
    assert ws.read(model, lambda p: (p / "arrays" / "x.npy").read_text()) == "x"
    assert ws.read(shard, lambda p: np.load(p).tolist()) == [0.0, 1.0, 2.0]
    ws.remove_run("r1")
    assert not ws.exists(model) and not ws.exists(shard)


def test_a_part_whose_writer_failed_does_not_count(root) -> None:
    ws = Workspace(root)
    with pytest.raises(RuntimeError), ws.atomic(ws.plan("r1")) as tmp:
        tmp.mkdir()
        _folder(tmp, **{"plan.json": "{}"})
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), ws.output(ws.values("r1")) as out:
        files.write_parquet(pa.table({"k": ["a"]}), out)
        raise RuntimeError("killed")
    assert not ws.exists(ws.plan("r1")) and not ws.exists(ws.values("r1"))


def test_a_part_written_again_replaces_the_old_one_and_gets_a_new_stamp(root) -> None:
    ws = Workspace(root)
    for rows in (["a", "b", "c"], ["d"]):
        with ws.output(ws.values("r1")) as out:
            files.write_parquet(pa.table({"k": rows}), out)
        assert files.parquet_dataset(ws.values("r1")).to_table().column("k").to_pylist() == rows
    stamps = []
    for text in ("old", "new"):
        with ws.atomic(ws.model("r1")) as tmp:
            tmp.mkdir()
            _folder(tmp, **{f"{text}.json": text})
        stamps.append(files.stamp(ws.model("r1")))
        assert ws.read(ws.model("r1"), lambda p: sorted(c.name for c in p.iterdir() if c.suffix == ".json")) == [
            f"{text}.json"
        ]
    assert stamps[0] != stamps[1]


def test_an_empty_output_counts_and_holds_no_rows(root) -> None:
    ws = Workspace(root)
    with ws.output(ws.inputs("r1")):
        pass
    assert ws.exists(ws.inputs("r1")) and files.parquet_dataset(ws.inputs("r1")).count_rows() == 0


def test_a_folder_in_s3_without_its_marker_does_not_count(s3) -> None:
    # What a step killed between its uploads and its marker leaves behind.
    bucket = s3.bucket("half")
    (s3.root / "half" / "ws" / "model").mkdir(parents=True)
    (s3.root / "half" / "ws" / "model" / "state.json").write_text("{}")
    assert not files.exists(TableRef.of(f"{bucket}/ws/model"))


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("credentials", "access to s3://files/ws/model was refused: check the credentials"),
        ("bucket", "bucket 'no-such-bucket' of s3://no-such-bucket/ws/model does not exist"),
        ("endpoint", "cannot reach http://127.0.0.1:9 for s3://files/ws/model"),
    ],
)
def test_a_store_that_refuses_is_one_line_without_secrets(s3, tmp_path, problem, message) -> None:
    s3.bucket("files")
    uri = "s3://no-such-bucket/ws/model" if problem == "bucket" else "s3://files/ws/model"
    options = {
        "credentials": {"AWS_SECRET_ACCESS_KEY": "wrong-" + SECRET},
        "endpoint": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
    }.get(problem, {})
    local = tmp_path / "model"
    local.mkdir()
    (local / "state.json").write_text("{}")
    with pytest.raises(InvalidInputError) as e:
        files.upload(local, TableRef.of(uri, options))
    assert str(e.value).startswith(message) and "\n" not in str(e.value) and SECRET not in str(e.value)
