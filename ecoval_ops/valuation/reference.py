"""The reference set of a fit at lakehouse scale (spec section 5b).

A fit on more than ``max_reference_rows`` training rows draws, from one per-row draw
``u_i`` (a 63-bit integer; smaller is drawn first):

1. the **clustering sample**: the ``R`` rows of smallest ``u_i``, on which the feature space and
   the clusters are fitted (every row is then assigned by responsibility);
2. the **reference set**: per stratum (cluster ``c``, label ``y``) of ``N_cy`` rows, the
   ``R_cy`` rows of smallest ``u_i``, the quotas ``R_cy`` proportional to ``N_cy`` and summing
   to ``R`` (largest remainders). A row is a reference row iff ``u_i <= t_cy``, the largest
   draw taken from its stratum, so an engine that sees one row at a time decides it alone.

The draws come from the row key (:func:`key_draws`, a keyed SipHash, the seed as its key), so
every engine and every process draws the same rows; an in-core fit without keys draws them
from its seed (:func:`seeded_draws`). With at most ``R`` rows every row is a reference row and
the method is the unsampled one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ALL_ROWS",
    "HOLDOUT_HASH_KEY",
    "HOLDOUT_SCHEME",
    "MIN_MEMBERS",
    "holdout_mask",
    "key_draws",
    "key_hash",
    "member_index",
    "quotas",
    "reference_mask",
    "seeded_draws",
    "select_reference",
    "smallest_draws",
    "stratum_counts",
    "stratum_threshold",
]

ALL_ROWS = np.iinfo(np.int64).max
"""The threshold of a stratum all of whose rows are reference rows."""

MIN_MEMBERS = 2
"""Reference rows a cluster keeps at least (its rows permitting), so every member has a neighbour."""


def key_hash(keys: ArrayLike, hash_key: str) -> NDArray[np.uint64]:
    """A 64-bit SipHash of each key's text (``str``), keyed by ``hash_key`` (16 characters).

    The text is hashed, so an integer key hashes the same in numpy, pandas and Arrow batches on
    either engine; the hash is vectorised (pandas' ``hash_array``), never a Python loop.
    """
    from pandas.util import hash_array

    text = np.asarray(keys).astype(str).astype(object)
    return np.asarray(hash_array(text, hash_key=hash_key, categorize=False), dtype=np.uint64)


def key_draws(keys: ArrayLike, seed: int) -> NDArray[np.int64]:
    """``u_i``: :func:`key_hash` keyed by ``seed``, shifted to 63 bits."""
    hashed = key_hash(keys, f"{seed & 0xFFFFFFFFFFFFFFFF:016x}")
    return np.asarray(hashed >> np.uint64(1), dtype=np.int64)


HOLDOUT_HASH_KEY = "ecoval-holdout-1"
"""The hash key of the hold-out split: fixed, so a row's side of the split depends on its key alone."""

HOLDOUT_SCHEME = f"siphash:{HOLDOUT_HASH_KEY}"
"""The hold-out split's name, recorded with each registered model (a model fitted on another split refits)."""


def holdout_mask(keys: ArrayLike, fraction: float) -> NDArray[np.bool_]:
    """``True`` for the keys whose :func:`key_hash` falls in the lowest ``fraction`` of its range.

    The choice depends on the key alone (not the seed), so a row stays in (or out of) the
    validation split on every run, whatever else lands in the table.
    """
    hashed = key_hash(keys, HOLDOUT_HASH_KEY)
    return np.asarray(hashed < np.uint64(min(int(fraction * 2.0**64), 2**64 - 1)), dtype=bool)


def seeded_draws(n: int, seed: int) -> NDArray[np.int64]:
    """``u_i`` of ``n`` rows without keys, from the seed (an in-core fit)."""
    return np.random.default_rng([seed, 5]).integers(0, ALL_ROWS, size=n, dtype=np.int64)


def smallest_draws(draws: NDArray[np.int64], limit: int) -> NDArray[np.intp]:
    """Sorted indices of the ``limit`` rows of smallest draw (every row when there are fewer)."""
    if draws.size <= limit:
        return np.arange(draws.size)
    return np.sort(np.argsort(draws, kind="stable")[:limit])


def stratum_counts(clusters: NDArray[np.int64], y: NDArray[np.int64], p: int, n_classes: int) -> NDArray[np.int64]:
    """``(p, K)`` ``N_cy``: rows per cluster and class."""
    return np.bincount(clusters * n_classes + y, minlength=p * n_classes).reshape(p, n_classes).astype(np.int64)


def quotas(counts: NDArray[np.int64], limit: int) -> NDArray[np.int64]:
    """``R_cy``: ``limit`` rows spread over the strata in proportion to their sizes ``N_cy``.

    Floors of the proportional shares, then one more row to the strata of the largest
    remainders (ties to the first stratum in C order); the counts themselves when they sum to
    at most ``limit``. A cluster whose share rounds below :data:`MIN_MEMBERS` rows gets that
    many from its largest strata (every member needs a neighbour in its cluster), so a small
    ``limit`` may be exceeded by at most that many rows per cluster.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total <= limit:
        return counts.copy()
    exact = counts * (limit / total)
    quota = np.floor(exact).astype(np.int64)
    short = limit - int(quota.sum())
    order = np.argsort(-(exact - quota).ravel(), kind="stable")[:short]
    flat = quota.ravel()
    flat[order] += 1
    quota = np.minimum(flat.reshape(counts.shape), counts)
    for c in range(counts.shape[0]):
        missing = min(MIN_MEMBERS, int(counts[c].sum())) - int(quota[c].sum())
        while missing > 0:
            k = int(np.argmax(counts[c] - quota[c]))
            quota[c, k] += 1
            missing -= 1
    return np.asarray(quota, dtype=np.int64)


def stratum_threshold(draws: NDArray[np.int64], quota: int) -> int:
    """``t_cy`` of one stratum's draws: the ``quota``-th smallest; :data:`ALL_ROWS` when all are taken, -1 when none."""
    if quota >= draws.size:
        return int(ALL_ROWS) if draws.size else -1
    if quota <= 0:
        return -1
    return int(np.partition(draws, quota - 1)[quota - 1])


def select_reference(
    draws: NDArray[np.int64], clusters: NDArray[np.int64], y: NDArray[np.int64], quota: NDArray[np.int64]
) -> NDArray[np.int64]:
    """``(p, K)`` thresholds ``t_cy`` (:func:`stratum_threshold`) taking ``quota[c, y]`` rows of each stratum.

    :func:`reference_mask` applies them. (Rows whose draw equals a threshold are all taken: with
    63-bit draws of distinct keys such a tie is a hash collision.)
    """
    n_classes = quota.shape[1]
    stratum = clusters * n_classes + y
    order = np.argsort(stratum, kind="stable")
    bounds = np.searchsorted(stratum[order], np.arange(quota.size + 1))
    flat = quota.ravel()
    threshold = np.array(
        [stratum_threshold(draws[order[bounds[s] : bounds[s + 1]]], int(flat[s])) for s in range(quota.size)],
        dtype=np.int64,
    )
    return threshold.reshape(quota.shape)


def reference_mask(
    draws: NDArray[np.int64], clusters: NDArray[np.int64], y: NDArray[np.int64], threshold: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """Whether each row is a reference row: ``u_i <= t_{c_i y_i}``."""
    return np.asarray(draws <= threshold[clusters, y], dtype=bool)


def member_index(member_draws: NDArray[np.int64], draws: NDArray[np.int64]) -> NDArray[np.int64]:
    """Each row's position among the members (the reference rows, by their draws), -1 for a non-member."""
    order = np.argsort(member_draws, kind="stable")
    ranked = member_draws[order]
    if ranked.size == 0:
        return np.full(draws.shape, -1, dtype=np.int64)
    at = np.clip(np.searchsorted(ranked, draws), 0, ranked.size - 1)
    return np.where(ranked[at] == draws, order[at], -1).astype(np.int64)
