"""Validation rows chosen by a hash of the row key: stable across runs and engines."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

__all__ = ["holdout_mask"]


def holdout_mask(keys: Iterable[object], fraction: float) -> NDArray[np.bool_]:
    """``True`` for the keys whose BLAKE2b hash falls in the lowest ``fraction`` of its range.

    The choice depends on the key alone, so a row stays in (or out of) the validation split
    on every run, whatever else lands in the table.
    """
    limit = int(fraction * 2**64)
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "big") < limit for k in keys],
        dtype=bool,
    )
