"""EcoVal's ``threads``: every thread pool a valuation starts stays within it, and the values do not move."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import ClassVar

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info

from ecoval_ops.valuation import EcoVal, SklearnLearner, SoftmaxRegression
from ecoval_ops.valuation import propagation_state as state_module
from ecoval_ops.valuation.neighbours import side_by_side
from ecoval_ops.valuation.threads import available_threads, cpu_threads
from tests.conftest import blobs

several_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a bound of one thread needs two cores to show")


def _pools() -> dict[str, int]:
    """The widest pool of each kind the calling thread would start: BLAS, OpenMP, torch, EcoVal's own."""
    import torch

    info = threadpool_info()
    return {
        "blas": max(i["num_threads"] for i in info if i["user_api"] == "blas"),
        "openmp": max(i["num_threads"] for i in info if i["user_api"] == "openmp"),
        "torch": torch.get_num_threads(),
        "side_by_side": available_threads(),
    }


class _Recording(SoftmaxRegression):
    """The default learner, noting the thread pools each call of the trainings sees."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.seen: list[dict[str, int]] = []

    def predict_proba_masked(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.seen.append(_pools())
        return super().predict_proba_masked(*args, **kwargs)


@pytest.fixture
def data():
    X, y = blobs(400, n_classes=3, d=5, noise=0.15, seed=4)
    Xv, yv = blobs(120, n_classes=3, d=5, noise=0.15, seed=5)
    return X, y, Xv, yv


@several_cores
def test_the_trainings_and_the_row_pass_keep_within_threads(data, monkeypatch) -> None:
    X, y, Xv, yv = data
    learner = _Recording()
    est = EcoVal(n_clusters=4, learner=learner, threads=1, seed=0).fit(X, y, Xv, yv)
    assert learner.seen and all(pools == dict.fromkeys(pools, 1) for pools in learner.seen)

    seen: list[dict[str, int]] = []
    original = state_module.side_by_side

    def recording(work, clusters):  # type: ignore[no-untyped-def]
        seen.append(_pools())
        return original(work, clusters)

    monkeypatch.setattr(state_module, "side_by_side", recording)
    est.value_rows(X[:50], y[:50])
    assert seen and all(pools == dict.fromkeys(pools, 1) for pools in seen)
    assert _pools()["torch"] == (os.cpu_count() or 1), "the bound outlived the call"


def test_threads_leave_the_values_as_they_are(data) -> None:
    X, y, Xv, yv = data
    wide = EcoVal(n_clusters=4, seed=0).fit(X, y, Xv, yv)
    narrow = EcoVal(n_clusters=4, seed=0, threads=1).fit(X, y, Xv, yv)
    np.testing.assert_allclose(narrow.values_, wide.values_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(narrow.clusters_, wide.clusters_)
    np.testing.assert_allclose(narrow.value(Xv, yv), wide.value(Xv, yv), rtol=1e-9, atol=1e-12)


@several_cores
def test_side_by_side_runs_in_the_caller_under_one_thread_and_each_worker_on_one_openmp_thread() -> None:
    def where(_: int) -> tuple[int, int]:
        return threading.get_ident(), _pools()["openmp"]

    with cpu_threads(1):
        bounded = side_by_side(where, [0, 1, 2])
    assert {ident for ident, _ in bounded} == {threading.get_ident()}
    wide = side_by_side(where, [0, 1, 2])
    assert {ident for ident, _ in wide} != {threading.get_ident()}
    # OpenMP's bound is per thread: the workers set their own, or faiss would take every core in each.
    assert {openmp for _, openmp in wide} == {1}


class _OpenMPRecording(LogisticRegression):
    seen: ClassVar[list[int]] = []

    def fit(self, X, y, sample_weight=None):  # type: ignore[no-untyped-def]
        _OpenMPRecording.seen.append(_pools()["openmp"])
        return super().fit(X, y, sample_weight)


@several_cores
def test_scikit_learn_models_fit_on_one_openmp_thread(data) -> None:
    X, y, Xv, _ = data
    masks = np.ones((3, y.size), dtype=bool)
    _OpenMPRecording.seen = []
    SklearnLearner(_OpenMPRecording()).predict_proba_masked(X, y, masks, Xv, n_classes=3, seed=0)
    assert _OpenMPRecording.seen == [1, 1, 1]
    assert _pools()["openmp"] > 1


def test_valuing_rows_under_a_bound_does_not_load_torch(data, tmp_path) -> None:
    # A Spark worker values rows with the saved model's threads: torch (about 0.5 GB) stays out.
    X, y, Xv, yv = data
    path = EcoVal(n_clusters=4, seed=0, threads=1).fit(X, y, Xv, yv).save(tmp_path / "model")
    np.save(tmp_path / "rows.npy", X[:40])
    np.save(tmp_path / "labels.npy", y[:40])
    script = (
        "import sys, numpy as np\n"
        "from ecoval_ops.valuation import EcoVal\n"
        f"ev = EcoVal.load({str(path)!r})\n"
        f"ev.value_rows(np.load({str(tmp_path / 'rows.npy')!r}), np.load({str(tmp_path / 'labels.npy')!r}))\n"
        "print(ev.threads, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "False"], done.stderr[-2000:]
