"""The passes over rows (lakehouse/checks.py, lakehouse/summary.py) on both runners, against pandas."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from ecoval_ops.engines import DeltaRsEngine, SparkEngine
from ecoval_ops.exceptions import DuplicateKeyError, InvalidInputError
from ecoval_ops.lakehouse.batches import run_local, run_spark
from ecoval_ops.lakehouse.checks import NewRowsPass, SourcePass, local_duplicates
from ecoval_ops.lakehouse.columns import NEW_COL
from ecoval_ops.lakehouse.source import SourceColumns
from ecoval_ops.lakehouse.summary import TopRowsPass, summarise
from ecoval_ops.valuation.quarantine import preview
from ecoval_ops.valuation.reference import holdout_mask


def _keys(n: int, start: int = 0) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"row/{i}")) for i in range(start, start + n)]


def _values(n: int, seed: int = 3) -> pa.Table:
    """Value columns of ``n`` rows as a run's workspace holds them (UUID keys, string labels)."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(-1, 1, n)
    clusters = rng.integers(0, 4, n)
    return pa.table(
        {
            "id": _keys(n),
            "ecoval_value": np.round(rng.normal(size=n), 3),  # ties, as real values have some
            "ecoval_percentile": rng.uniform(size=n),
            "ecoval_intrinsic": alpha,
            "ecoval_cluster": pa.array(clusters, pa.int32()),
            "ecoval_cluster_value": clusters * 0.1 - 0.15,
            "ecoval_suspect": alpha < 0,
            "ecoval_mode": np.where(rng.random(n) < 0.3, "in_sample", "out_of_sample"),
            "ecoval_run_id": ["run-1"] * n,
            NEW_COL: rng.random(n) < 0.4,
        }
    )


def test_a_summary_agrees_with_pandas_on_every_figure() -> None:
    table = _values(5000)
    frame = table.to_pandas()
    summary = summarise(
        lambda step: run_local(step, table.to_batches(max_chunksize=700)),
        top=TopRowsPass("id", pa.string(), 20),
        new=True,
    )
    assert summary is not None
    assert summary.rows == 5000 and summary.suspects == int(frame["ecoval_suspect"].sum())
    assert summary.by_mode == {str(k): int(v) for k, v in frame["ecoval_mode"].value_counts().sort_index().items()}
    clusters = summary.clusters().set_index("cluster")
    grouped = frame.groupby("ecoval_cluster")
    np.testing.assert_allclose(clusters["mean_value"], grouped["ecoval_value"].mean().loc[clusters.index])
    np.testing.assert_allclose(clusters["suspect_share"], grouped["ecoval_suspect"].mean().loc[clusters.index])
    new = frame[frame[NEW_COL]]
    night = summary.new_rows()
    assert int(night["rows"].sum()) == len(new) and int(night["suspects"].sum()) == int(new["ecoval_suspect"].sum())
    # The ranked ends: highest first, then lowest first, ties by key.
    ranked = frame.sort_values(["ecoval_value", "id"], ascending=[False, True])
    top = summary.top_bottom[summary.top_bottom["end"] == "top"]
    assert top["id"].tolist() == ranked["id"].head(20).tolist()
    bottom = summary.top_bottom[summary.top_bottom["end"] == "bottom"]
    assert bottom["id"].tolist() == frame.sort_values(["ecoval_value", "id"])["id"].head(20).tolist()
    # Quantiles and cuts from the histogram: within a bin (and the values' rounding) of the exact ones.
    width = (frame["ecoval_value"].max() - frame["ecoval_value"].min()) / 8192
    for q in (0.0, 0.05, 0.5, 0.95, 1.0):
        assert abs(summary.quantile(q) - np.quantile(frame["ecoval_value"], q)) <= width + 0.001
    exact = preview(frame["ecoval_value"].to_numpy(), frame["ecoval_intrinsic"].to_numpy(), frame["ecoval_suspect"])
    for mine, theirs in zip(summary.preview(None), exact, strict=True):
        assert (mine.cut, mine.rows_removed) == (theirs.cut, theirs.rows_removed)
        assert mine.expected_wrong_labels == pytest.approx(theirs.expected_wrong_labels, abs=1.0)


def test_duplicates_are_exact_when_key_hashes_collide(tmp_path, monkeypatch) -> None:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from ecoval_ops.lakehouse import checks

    path = tmp_path / "keys.parquet"
    keys = _keys(300) + _keys(3)
    pq.write_table(pa.table({"id": keys}), path)
    assert local_duplicates(ds.dataset(path), "id") == 3
    # Every key hashes alike: only an exact comparison tells the 3 repeats from the 300 keys.
    monkeypatch.setattr(checks, "key_hash", lambda keys, hash_key: np.zeros(len(keys), np.uint64))
    assert local_duplicates(ds.dataset(path), "id") == 3
    pq.write_table(pa.table({"id": _keys(300)}), path)
    assert local_duplicates(ds.dataset(path), "id") == 0


def test_the_new_rows_digest_ignores_order_and_batches() -> None:
    keys = pa.array(_keys(1000))
    step = NewRowsPass("id")
    whole = run_local(step, [pa.record_batch({"id": keys})])
    shuffled = pa.record_batch({"id": keys.take(pa.array(np.random.default_rng(0).permutation(1000)))})
    assert run_local(step, shuffled.to_pandas().pipe(pa.Table.from_pandas).to_batches(max_chunksize=77)) == whole
    assert run_local(step, [pa.record_batch({"id": keys[:999]})]) != whole


@pytest.mark.spark
def test_spark_runs_the_passes_as_delta_rs_does(spark, tmp_path) -> None:
    table = _values(3000)
    frame = spark.createDataFrame(table.to_pandas()).repartition(7)
    for new in (True, False):
        local = summarise(lambda s: run_local(s, table.to_batches(max_chunksize=500)), top=None, new=new)
        remote = summarise(lambda s: run_spark(s, frame), top=None, new=new)
        assert local is not None and remote is not None
        pd.testing.assert_frame_equal(local.clusters(), remote.clusters())
        for mine, theirs in zip(local.preview(None), remote.preview(None), strict=True):
            assert (mine.cut, mine.rows_removed) == (theirs.cut, theirs.rows_removed)
            assert mine.expected_wrong_labels == pytest.approx(theirs.expected_wrong_labels, rel=1e-12)
    step = SourcePass("id", "ecoval_mode", pa.string(), 0.25)
    checked = run_spark(step, frame)
    assert checked == run_local(step, table.to_batches(max_chunksize=500))
    assert checked.held_out == int(holdout_mask(table.column("id").to_numpy(zero_copy_only=False), 0.25).sum())
    assert run_spark(NewRowsPass("id"), frame) == run_local(NewRowsPass("id"), table.to_batches())


@pytest.mark.spark
@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"id": _keys(10) + _keys(2), "label": ["a", "b"] * 6}, "'id' of .* has 2 duplicate keys"),
        ({"id": [*_keys(11), None], "label": ["a", "b"] * 6}, "column 'id' of .* has 1 null values"),
        ({"id": _keys(12), "label": ["a", None] * 6}, "column 'label' of .* has 6 null values"),
        ({"id": pa.array([], pa.string()), "label": pa.array([], pa.string())}, "is empty"),
    ],
    ids=["duplicates", "null keys", "null labels", "empty"],
)
def test_both_engines_refuse_bad_rows_alike(spark, tmp_path, rows, message) -> None:
    path = tmp_path / "bad"
    data = pa.table({**rows, "f0": np.zeros(len(rows["id"]))})
    write_deltalake(str(path), data)
    columns = SourceColumns("id", "label", ("f0",))
    errors = []
    for engine in (DeltaRsEngine(), SparkEngine(spark)):
        with pytest.raises((InvalidInputError, DuplicateKeyError), match=message) as caught:
            engine.check_source(columns, path, 0, fraction=0.1)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


@pytest.mark.spark
def test_the_spark_row_pass_gets_its_rows_grouped_by_cluster(spark) -> None:
    from ecoval_ops.engines.spark_rows import by_cluster
    from ecoval_ops.lakehouse.columns import EMBEDDING_COL
    from ecoval_ops.valuation import EcoVal
    from tests.conftest import blobs

    X, y = blobs(1200, d=4, seed=5)
    assign = EcoVal(n_clusters=5).fit(X[:400], y[:400], X[400:500], y[400:500]).model_.assigner()
    rows = pd.DataFrame({"id": _keys(1200), "label": y.astype(str), EMBEDDING_COL: list(X)})
    grouped = by_cluster(spark.createDataFrame(rows).repartition(6), assign)

    def parts(batches):
        for part in batches:
            clusters = part["ecoval_cluster"].to_numpy()
            if clusters.size:
                runs = int((np.diff(clusters) != 0).sum()) + 1
                yield pd.DataFrame({"runs": [runs], "held": [np.unique(clusters).size]})

    counted = grouped.mapInPandas(parts, "runs long, held long").toPandas()
    got = grouped.toPandas().set_index("id").loc[rows["id"]]
    np.testing.assert_array_equal(got["ecoval_cluster"].to_numpy(), assign(X))
    np.testing.assert_array_equal(got["label"].to_numpy(), rows["label"].to_numpy())
    # Each partition's rows come cluster after cluster: one run per cluster it holds.
    np.testing.assert_array_equal(counted["runs"], counted["held"])
    assert len(counted) == 6 and counted["held"].min() > 1
