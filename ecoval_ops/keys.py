"""Row keys as tables hold them: the key types a run accepts, and keys saved with their Arrow type.

A key is compared, hashed (the hold-out split, the reference draws) and joined on by both
engines, so a key type must read the same in Arrow, numpy, pandas and Spark's Arrow batches:
integers and strings do (UUIDs are strings in Delta). Dates, timestamps, decimals, floats,
booleans and binary keys convert differently in each (a timestamp's text differs between numpy
and pandas, which would move rows between the hold-out split and the reference set from one
engine to the other), so a table keyed by one is refused with one line naming these types.

Keys that a run saves (the reference rows of a plan, the registered model's member keys) keep
the key column's own Arrow type: a Parquet file of one column, never a pickled numpy array.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["SUPPORTED_KEY_TYPES", "check_key_type", "read_keys", "write_keys"]

SUPPORTED_KEY_TYPES = "integers (tinyint, smallint, int, bigint) and strings (UUIDs included)"
"""The key types a run accepts, as messages name them."""

_COLUMN = "key"


def check_key_type(key_type: pa.DataType, column: str, where: str) -> None:
    """Check that a key column of ``key_type`` can key a run.

    Raises:
        InvalidInputError: any other type, naming the column, its type and the supported ones.
    """
    import pyarrow as pa

    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if pa.types.is_integer(key_type) or any(is_string(key_type) for is_string in strings):
        return
    raise InvalidInputError(
        f"key column {column!r} of {where} holds {key_type}; supported key types are {SUPPORTED_KEY_TYPES}"
    )


def write_keys(keys: pa.Array | pa.ChunkedArray, path: Path) -> Path:
    """Save ``keys`` with their Arrow type (one Parquet column); returns ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({_COLUMN: keys}), path)
    return path


def read_keys(path: str | Path) -> pa.Array:
    """The keys :func:`write_keys` saved, of the type they were saved with.

    A ``.npy`` file is a model registered before keys were saved as Parquet; only integer keys
    could be saved that way, and they load with ``allow_pickle=False``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if Path(path).suffix == ".npy":
        import numpy as np

        return pa.array(np.load(path, allow_pickle=False))
    return pq.read_table(path).column(_COLUMN).combine_chunks()
