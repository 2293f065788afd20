"""Keys saved with their Arrow type, and the key types a run accepts."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.keys import SUPPORTED_KEY_TYPES, check_key_type, read_keys, write_keys

SAVED = [
    pa.array([3, -1, 2**62], pa.int64()),
    pa.array([7, 8], pa.int8()),
    pa.array(["r000001", "clé n° 2 ✓", ""], pa.string()),
    pa.array(["a", "b"], pa.large_string()),
]


@pytest.mark.parametrize("keys", SAVED, ids=lambda k: str(k.type))
def test_keys_come_back_equal_and_of_their_type(tmp_path, keys) -> None:
    back = read_keys(write_keys(keys, tmp_path / "keys.parquet"))
    assert back.type == keys.type and back.equals(keys)


def test_keys_of_a_model_registered_before_parquet_still_load(tmp_path) -> None:
    np.save(tmp_path / "member_keys.npy", np.array([5, 2**60]), allow_pickle=False)
    assert read_keys(tmp_path / "member_keys.npy").to_pylist() == [5, 2**60]


@pytest.mark.parametrize("key_type", [pa.int16(), pa.int32(), pa.uint64(), pa.string(), pa.large_string()])
def test_integer_and_string_keys_are_accepted(key_type) -> None:
    check_key_type(key_type, "id", "t@v0")


@pytest.mark.parametrize("key_type", [pa.date32(), pa.timestamp("us"), pa.float64(), pa.bool_(), pa.binary()])
def test_other_key_types_are_refused_naming_the_supported_ones(key_type) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"key column 'id' of t@v0 holds {key_type};")) as raised:
        check_key_type(key_type, "id", "t@v0")
    assert SUPPORTED_KEY_TYPES in str(raised.value)
