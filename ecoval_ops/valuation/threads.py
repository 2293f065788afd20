"""How many CPU threads a valuation uses: EcoVal's ``threads``.

BLAS, OpenMP (faiss, scikit-learn's trees) and torch each start a thread per core. Two
valuations on one host (two runs, or Airflow's shard tasks side by side) then put twice as many
spinning threads on the cores as there are cores: on 2 cores a D1 valuation (1,000 rows, 10
classes) took 7-14 s beside another against 2.0 s alone, and 2.5 s each at one thread per process
(``benchmarks/concurrency.py``). :func:`cpu_threads` bounds every one of them, and the work that
EcoVal itself runs side by side (the clusters' searches, the metric's trees) asks
:func:`available_threads` how wide to go.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["available_threads", "cpu_threads"]

# Scoped like numpy's errstate: set by cpu_threads for the calls inside it, read by the workers' owner.
_BOUND: ContextVar[int | None] = ContextVar("ecoval_threads", default=None)


@contextmanager
def cpu_threads(threads: int | None, *, trains_torch: bool = False) -> Iterator[None]:
    """Run the block with BLAS, OpenMP and torch on at most ``threads`` threads; None leaves them be.

    Args:
        threads: the bound, or None.
        trains_torch: the block trains the torch learners. threadpoolctl bounds the libraries
            loaded when it is called, so faiss's and scikit-learn's OpenMP are loaded first, and
            torch's where the block will use it: importing torch takes about 0.5 GB, which a
            row pass (a Spark worker) must not pay.
    """
    if threads is None:
        yield
        return
    import faiss  # noqa: F401
    import sklearn.utils._openmp_helpers  # noqa: F401
    from threadpoolctl import threadpool_limits

    if trains_torch:
        import torch  # noqa: F401
    token = _BOUND.set(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        _BOUND.reset(token)


def available_threads() -> int:
    """Threads that work run side by side may take: the bound of :func:`cpu_threads`, else every core."""
    cores = os.cpu_count() or 1
    bound = _BOUND.get()
    return cores if bound is None else min(bound, cores)
