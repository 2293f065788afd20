"""EcoVal as an estimator: learners, sampling, PCA, persistence."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from sklearn.naive_bayes import GaussianNB

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.clustering import n_trainings
from tests.conftest import blobs


@pytest.mark.parametrize(
    "learner", ["logistic", "mlp", "trees", GaussianNB()], ids=["logistic", "mlp", "trees", "sklearn"]
)
def test_every_learner_values_every_row(learner, small_data) -> None:
    ev = EcoVal(n_clusters=4, learner=learner, device="cpu").fit(*small_data)
    assert ev.values_.shape == (300,) and np.isfinite(ev.values_).all()
    assert ev.n_trainings_ == n_trainings(4, pairwise=True)
    assert ev.learner is learner


def test_boosted_trees_measure_a_label_no_linear_model_fits() -> None:
    # An XOR label: a linear learner's full model gains about nothing over the empty one, so
    # every cluster's value is noise; the trees' trainings measure what the clusters carry.
    rng = np.random.default_rng(3)
    X = rng.uniform(-1.0, 1.0, size=(900, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
    gains = {
        learner: EcoVal(n_clusters=4, learner=learner, device="cpu").fit(X[:600], y[:600], X[600:], y[600:])
        for learner in ("logistic", "trees")
    }
    assert gains["trees"].model_.game.total_gain > 10 * max(gains["logistic"].model_.game.total_gain, 1e-3)
    assert gains["trees"].n_trainings_ == gains["logistic"].n_trainings_ == n_trainings(4, pairwise=True)


def test_default_budget_gives_twelve_clusters_and_eighty_trainings() -> None:
    X, y = blobs(2400, n_classes=4, d=6, noise=0.05, seed=9)
    ev = EcoVal().fit(X[:2000], y[:2000], X[2000:], y[2000:])
    assert ev.n_clusters_ <= 12
    assert ev.n_trainings_ == n_trainings(ev.n_clusters_, pairwise=True) <= 80


def test_seeds_average_repeated_trainings(small_data) -> None:
    # The MLP's initialisation depends on the seed, so a second seed changes the average.
    one = EcoVal(n_clusters=3, seeds=1, learner="mlp", device="cpu").fit(*small_data)
    two = EcoVal(n_clusters=3, seeds=2, learner="mlp", device="cpu").fit(*small_data)
    assert two.n_trainings_ == 2 * one.n_trainings_
    assert not np.array_equal(one.values_, two.values_)


def test_trainings_run_on_a_stratified_sample_but_value_every_row() -> None:
    X, y = blobs(1300, seed=4, noise=0.1)
    ev = EcoVal(n_clusters=4, max_train_rows=300).fit(X[:1200], y[:1200], X[1200:], y[1200:])
    assert ev.values_.shape == (1200,)
    assert ev.n_trainings_ == n_trainings(4, pairwise=True)
    np.testing.assert_allclose(ev.values_.sum(), (np.bincount(ev.clusters_) * ev.model_.cluster_shares()).sum())


def test_wide_embeddings_are_clustered_in_pca_space() -> None:
    X, y = blobs(400, d=100, seed=6)
    ev = EcoVal(n_clusters=3, pca_dims=8).fit(X[:300], y[:300], X[300:], y[300:])
    assign = ev.model_.assigner()
    assert assign.space.components.shape == (8, 100)
    assert ev.model_.member_embeddings().shape == (300, 8)
    r = assign.model.responsibilities(assign.space.cluster_space(X[300:]))
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    np.testing.assert_array_equal(r.argmax(axis=1), assign(X[300:]))


def test_save_writes_arrays_and_json_only(small_data, tmp_path) -> None:
    ev = EcoVal(n_clusters=3).fit(*small_data)
    folder = ev.save(tmp_path / "state")
    assert sorted(p.name for p in folder.iterdir()) == ["ecoval.json", "state.npz"]
    meta = json.loads((folder / "ecoval.json").read_text())
    assert meta["params"]["n_clusters"] == 3 and meta["n_trainings"] == ev.n_trainings_
    with zipfile.ZipFile(folder / "state.npz") as z, np.load(folder / "state.npz", allow_pickle=False) as arrays:
        assert all(name.endswith(".npy") for name in z.namelist())
        assert all(arrays[k].dtype != object for k in arrays.files)
    loaded = EcoVal.load(folder)
    for name in ("values_", "intrinsic_", "extrinsic_", "clusters_", "cluster_values_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(ev, name))
    assert loaded.gamma_alpha_ == ev.gamma_alpha_ and loaded.n_trainings_ == ev.n_trainings_
    X_val, y_val = small_data[2], small_data[3]
    np.testing.assert_array_equal(loaded.value(X_val, y_val), ev.value(X_val, y_val))


@pytest.mark.parametrize("search", ["exact", "approx"])
def test_a_model_read_per_cluster_values_as_the_model_and_holds_one_cluster(search, tmp_path) -> None:
    X, y = blobs(900, n_classes=3, d=5, seed=11, noise=0.2)
    ev = EcoVal(n_clusters=4, neighbour_search=search).fit(X[:600], y[:600], X[600:700], y[600:700])
    loaded = EcoVal.load(ev.save(tmp_path / "m"), per_cluster=True)
    # Mapped from the file: read-only, and no copy of the process's own.
    assert not loaded.model_.member_embeddings().flags.writeable
    assert not loaded.model_.member_embeddings().flags.owndata
    np.testing.assert_array_equal(loaded.model_.member_embeddings(), ev.model_.member_embeddings())
    X_new, y_new = X[700:], y[700:]
    clusters = ev.model_.assigner()(X_new)
    # Rows grouped by cluster, as Spark's row pass hands them over, in batches that cross clusters.
    order = np.argsort(clusters, kind="stable")
    held = []
    for batch in np.array_split(order, 7):
        np.testing.assert_array_equal(loaded.value(X_new[batch], y_new[batch]), ev.value(X_new[batch], y_new[batch]))
        held.append(sorted(loaded.model_._state._indexes))
        assert held[-1] == sorted(set(clusters[batch].tolist()))
    assert set().union(*held) == set(clusters.tolist())
    in_sample = loaded.model_.value_rows(X[:600], y[:600], train_index=np.arange(600))
    np.testing.assert_array_equal(in_sample.values, ev.values_)


def test_saved_arrays_map_where_they_lie_in_the_archive(tmp_path) -> None:
    from ecoval_ops.valuation._saved import read_saved, write_saved

    rng = np.random.default_rng(3)
    arrays = {
        "f32": rng.normal(size=(37, 5)).astype(np.float32),
        "fortran": np.asfortranarray(rng.normal(size=(6, 4))),
        "codes": rng.integers(0, 9, size=101),
        "none": np.zeros((0, 3)),
        "kept": np.arange(4.0),
    }
    write_saved(tmp_path, "a.npz", arrays, "m.json", {"x": 1})
    meta, read = read_saved(tmp_path, "a.npz", "m.json", "test", mapped=("f32", "fortran", "codes", "none"))
    assert meta == {"x": 1} and read.keys() == arrays.keys()
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)
    assert isinstance(read["f32"], np.memmap) and not isinstance(read["kept"], np.memmap)
    with pytest.raises(InvalidInputError, match="does not hold a saved test"):
        read_saved(tmp_path, "a.npz", "m.json", "test", mapped=("absent",))


def test_value_rows_reports_out_of_sample_details(small_data) -> None:
    ev = EcoVal(n_clusters=3).fit(*small_data)
    rows = ev.value_rows(small_data[2], small_data[3])
    assert rows.mode == "out_of_sample" and len(rows) == 100
    np.testing.assert_array_equal(rows.cluster_values, ev.cluster_values_[rows.clusters])
    assert np.all((rows.intrinsic >= -1) & (rows.intrinsic <= 1))
    assert np.all((rows.extrinsic > 0) & (rows.extrinsic <= 1))


def test_sharded_trainings_give_the_values_of_one_fit(small_data, tmp_path) -> None:
    from ecoval_ops.valuation import TrainingPlan

    X, y, X_val, y_val = small_data
    whole = EcoVal(n_clusters=4).fit(X, y, X_val, y_val)
    est = EcoVal(n_clusters=4)
    plan = TrainingPlan.load(est.prepare(X, y, X_val, y_val).save(tmp_path / "plan"))
    shards = plan.shards(3)
    assert sorted(i for s in shards for i in s) == list(range(plan.n_masks)) and len(shards) == 3
    utilities = np.concatenate([est.train_masks(plan, s) for s in shards])
    est.fit_plan(plan, utilities, X, y, n_trainings=plan.n_trainings(len(shards)))
    # Each shard warm-starts from its own fit of B, so values agree to the optimiser's tolerance.
    np.testing.assert_allclose(est.values_, whole.values_, atol=1e-4)
    np.testing.assert_array_equal(est.clusters_, whole.clusters_)
    assert est.n_trainings_ == whole.n_trainings_ + 2
    assert [plan.left_out(i) for i in (0, 1, 2, 6)] == ["none", "half", "0", "0,1"]


def test_fit_plan_refuses_utilities_of_another_shape(small_data) -> None:
    from ecoval_ops.exceptions import InvalidInputError

    X, y, X_val, y_val = small_data
    est = EcoVal(n_clusters=3)
    plan = est.prepare(X, y, X_val, y_val)
    with pytest.raises(InvalidInputError, match="utilities have shape"):
        est.fit_plan(plan, np.zeros((2, y_val.size)), X, y, n_trainings=0)


def test_production_and_propagator_compose(small_data, tmp_path) -> None:
    from ecoval_ops.valuation.production import SecondOrderProduction
    from ecoval_ops.valuation.propagation import NeighbourPropagator

    by_params = EcoVal(n_clusters=3, shrinkage=False, k_neighbors=5, c_kappa=2.0).fit(*small_data)
    composed = EcoVal(
        n_clusters=3,
        production=SecondOrderProduction(shrinkage=False),
        propagator=NeighbourPropagator(k_neighbors=5, c_kappa=2.0, empirical_bayes=True),
    ).fit(*small_data)
    np.testing.assert_array_equal(composed.values_, by_params.values_)
    assert not np.array_equal(composed.values_, EcoVal(n_clusters=3).fit(*small_data).values_)

    class Flat(SecondOrderProduction):
        """Another production function: a user's own part, met by the Protocol."""

    custom = EcoVal(n_clusters=3, production=Flat()).fit(*small_data)
    params = json.loads((custom.save(tmp_path / "m") / "ecoval.json").read_text())["params"]
    assert params["production"].endswith("Flat") and params["propagator"] is None
    loaded = EcoVal.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.value(*small_data[2:]), custom.value(*small_data[2:]))


def test_clone_gives_an_unfitted_copy_that_fits_the_same_values(small_data) -> None:
    from sklearn.base import clone

    from ecoval_ops.exceptions import InvalidInputError, NotFittedError

    ev = EcoVal(n_clusters=3, k_neighbors=5, seed=2).fit(*small_data)
    copy = clone(ev)
    assert copy.get_params() == ev.get_params() and not hasattr(copy, "model_")
    with pytest.raises(NotFittedError):
        copy.value(small_data[2], small_data[3])
    np.testing.assert_array_equal(copy.fit(*small_data).values_, ev.values_)
    assert copy.set_params(k_neighbors=7) is copy and copy.k_neighbors == 7
    with pytest.raises(InvalidInputError, match="EcoVal has no parameter neighbours"):
        copy.set_params(neighbours=3)
