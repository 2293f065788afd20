"""Files under a :class:`~ecoval_ops.storage.TableRef`: a local folder or an object-store prefix, one API.

A run's workspace (plans, shards, models, Parquet inputs and values) lies where its table does,
so tasks on other hosts and Spark's executors reach it. Each ref gets one ``pyarrow.fs`` file
system from its storage options and the AWS environment (:func:`filesystem`). Loaders that need
a local path (a saved model, a plan) get a copy fetched for the call (:func:`read`).

A folder in an object store is complete when its :data:`DONE` marker exists: it is written last,
with a new token each time (:func:`stamp`). A single file needs none: an object appears whole or
not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ecoval_ops.storage import TableRef, storage_error

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

__all__ = [
    "DONE",
    "exists",
    "filesystem",
    "mark_done",
    "parquet_dataset",
    "read",
    "remove",
    "renamed_into",
    "stamp",
    "upload",
    "write_parquet",
]

T = TypeVar("T")

DONE = "_ecoval_done"
"""The marker written last into a committed folder of an object store; it holds the commit's token."""


def filesystem(ref: TableRef) -> tuple[pafs.FileSystem, str]:
    """The file system of ``ref`` and the path in it.

    S3 takes ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``, ``AWS_REGION``, the keys and the session
    token from the storage options, else the environment; other stores (``gs://``, ``abfss://``)
    are opened by ``pyarrow.fs`` from the URI and their own environment.
    """
    import pyarrow.fs as pafs

    if ref.is_local:
        return pafs.LocalFileSystem(), ref.uri
    if not ref.is_s3:
        other: tuple[pafs.FileSystem, str] = pafs.FileSystem.from_uri(ref.uri)
        return other
    endpoint = ref.option("AWS_ENDPOINT_URL") or ""
    scheme, _, host = endpoint.rpartition("://")
    plain = scheme == "http" or (ref.option("AWS_ALLOW_HTTP") or "").lower() == "true"
    s3 = pafs.S3FileSystem(
        access_key=ref.option("AWS_ACCESS_KEY_ID"),
        secret_key=ref.option("AWS_SECRET_ACCESS_KEY"),
        session_token=ref.option("AWS_SESSION_TOKEN"),
        region=ref.option("AWS_REGION") or ref.option("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_override=host or None,
        scheme="http" if plain else "https",
    )
    return s3, ref.uri.split("://", 1)[1]


@contextmanager
def _store_errors(ref: TableRef) -> Iterator[None]:
    """An object store's ``OSError`` inside becomes one line without secrets."""
    try:
        yield
    except OSError as e:
        if ref.is_local:
            raise
        raise storage_error(e, ref) from None


def exists(ref: TableRef) -> bool:
    """Whether ``ref`` is a file, or a committed folder (its :data:`DONE` marker, or locally any folder)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(ref)
    with _store_errors(ref):
        found = fs.get_file_info(path).type
        if found == pafs.FileType.File or (ref.is_local and found == pafs.FileType.Directory):
            return True
        return bool(found == pafs.FileType.Directory and fs.get_file_info(f"{path}/{DONE}").type == pafs.FileType.File)


def stamp(ref: TableRef) -> str:
    """What changes when ``ref`` is committed anew: the folder's token, or a local folder's inode and time."""
    if ref.is_local:
        info = Path(ref.uri).stat()
        return f"{info.st_ino}:{info.st_mtime_ns}"
    return _read_text(ref / DONE)


def read(ref: TableRef, load: Callable[[Path], T]) -> T:
    """``load`` called on a local path holding what ``ref`` holds: ``ref`` itself, or a fetched copy.

    A copy is fetched into a temporary folder and removed once ``load`` returns, so ``load`` must
    read everything it keeps into memory, or memory-map it (a removed file's data stay readable
    while mapped: ``EcoVal.load(per_cluster=True)`` on a Spark worker).
    """
    if ref.is_local:
        return load(Path(ref.uri))
    import pyarrow.fs as pafs

    fs, path = filesystem(ref)
    with tempfile.TemporaryDirectory(prefix="ecoval-") as folder, _store_errors(ref):
        local = Path(folder) / ref.name
        if fs.get_file_info(path).type == pafs.FileType.File:
            pafs.copy_files(path, str(local), source_filesystem=fs)
        else:
            local.mkdir()
            pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        return load(local)


def upload(local: Path, ref: TableRef) -> None:
    """Copy the file or folder ``local`` to ``ref`` (replacing what was there); a folder gets its marker last."""
    import pyarrow.fs as pafs

    fs, path = filesystem(ref)
    with _store_errors(ref):
        if local.is_file():
            pafs.copy_files(str(local), path, destination_filesystem=fs)
            return
        fs.create_dir(path)
        fs.delete_dir_contents(path, missing_dir_ok=True)
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        mark_done(ref)


def mark_done(ref: TableRef) -> None:
    """Commit the folder ``ref`` of an object store: write its :data:`DONE` marker with a new token."""
    fs, path = filesystem(ref)
    with _store_errors(ref), fs.open_output_stream(f"{path}/{DONE}") as out:
        out.write(uuid.uuid4().hex.encode())


def remove(ref: TableRef) -> None:
    """Delete the folder or file ``ref``; nothing to delete is fine."""
    import pyarrow.fs as pafs

    fs, path = filesystem(ref)
    with _store_errors(ref):
        found = fs.get_file_info(path).type
        if found == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif found == pafs.FileType.File:
            fs.delete_file(path)


def parquet_dataset(ref: TableRef) -> ds.Dataset:
    """The Parquet files under ``ref`` as one dataset (markers and Spark's ``_SUCCESS`` are skipped)."""
    import pyarrow.dataset as ds

    fs, path = filesystem(ref)
    with _store_errors(ref):
        return ds.dataset(path, format="parquet", filesystem=fs)


def write_parquet(table: pa.Table, folder: TableRef) -> None:
    """Write ``table`` as the Parquet file ``part-0.parquet`` of ``folder`` (created if missing)."""
    import pyarrow.parquet as pq

    fs, path = filesystem(folder)
    with _store_errors(folder):
        fs.create_dir(path)
        pq.write_table(table, f"{path}/part-0.parquet", filesystem=fs)


def _read_text(ref: TableRef) -> str:
    fs, path = filesystem(ref)
    with _store_errors(ref), fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


@contextmanager
def renamed_into(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed to it when the block ends (an old one is replaced)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
