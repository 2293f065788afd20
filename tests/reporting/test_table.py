"""`ecoval report`, `ecoval sql` and the run's progress bars, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse.queries import create_views, ready_queries, view_names
from tests.conftest import blobs
from tests.test_cli import _ecoval

pytestmark = [pytest.mark.integration, pytest.mark.delta, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def valued(tmp_path_factory):
    """A 300-row table valued once by the CLI (delta-rs engine), with its MLflow store."""
    tmp = tmp_path_factory.mktemp("report")
    X, y = blobs(300, n_classes=2, d=2, noise=0.1, seed=4)
    path = tmp / "events"
    write_deltalake(str(path), pa.table({"id": np.arange(300), "a": X[:, 0], "b": X[:, 1], "y": y}))
    out = _ecoval(
        "run", "--table", str(path), "--key", "id", "--label", "y", "--features", "a,b", "--n-clusters", "3",
        "--engine", "delta-rs", "--json", cwd=tmp,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return path, tmp, json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _at_a_terminal(args: list[str], cwd) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (as a person at a shell); returns rc, stdout, stderr."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecoval_ops.cli", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=slave, text=True
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.stdout.read() if proc.stdout else ""
    return proc.wait(), stdout, b"".join(chunks).decode(errors="replace")


def test_run_draws_progress_at_a_terminal_and_json_alone_on_stdout(valued, tmp_path) -> None:
    _, _, summary, piped_stderr = valued
    assert summary["mode"] == "refit" and summary["rows_valued"] == 300
    assert "━" not in piped_stderr and "propagation" not in piped_stderr, "no bars when stderr is not a terminal"
    X, y = blobs(120, n_classes=2, d=2, noise=0.1, seed=5)
    path = tmp_path / "tty"
    write_deltalake(str(path), pa.table({"id": np.arange(120), "a": X[:, 0], "b": X[:, 1], "y": y}))
    rc, stdout, stderr = _at_a_terminal(
        ["run", "--table", str(path), "--key", "id", "--label", "y", "--features", "a,b", "--n-clusters", "3",
         "--engine", "delta-rs", "--json"],
        tmp_path,
    )  # fmt: skip
    assert rc == 0, stderr[-2000:]
    for stage in ("embedding", "clustering", "trainings", "fitting", "propagation", "writing"):
        assert stage in stderr
    assert json.loads(stdout.strip())["rows_valued"] == 120


def test_quiet_run_prints_nothing(valued) -> None:
    path, tmp, _, _ = valued
    write_deltalake(
        str(path), pa.table({"id": [1000], "a": [0.1], "b": [0.2], "y": [1]}), mode="append", schema_mode="merge"
    )
    out = _ecoval(
        "run", "--table", str(path), "--key", "id", "--label", "y", "--features", "a,b", "--engine", "delta-rs",
        "--quiet", cwd=tmp,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""


def test_report_summarises_the_value_columns(valued) -> None:
    path, tmp, summary, _ = valued
    out = _ecoval("report", "--table", str(path), "--html", "report.html", cwd=tmp)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    table = DeltaTable(str(path)).to_pyarrow_table().to_pandas()
    valued_rows = table["ecoval_value"].notna().sum()
    assert f"{len(table)} in the table, {valued_rows} valued" in text
    assert f"{int(table['ecoval_suspect'].sum())} rows" in text
    assert "value quantiles: 0% " in text and "best clusters" in text and "worst clusters" in text
    assert "WHERE ecoval_value > 0 AND NOT ecoval_suspect" in text
    page = (tmp / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") >= 3
    assert "cluster_map.png" in page

    only = _ecoval("report", "--table", str(path), "--run-id", summary["run_id"], "--html", "refit.html", cwd=tmp)
    assert only.returncode == 0 and f"run {summary['run_id']}" in only.stdout, only.stderr
    assert "removal_curve.png" in (tmp / "refit.html").read_text()


def test_report_names_what_is_wrong(valued, tmp_path) -> None:
    path, tmp, _, _ = valued
    unknown = _ecoval("report", "--table", str(path), "--run-id", "abc123", cwd=tmp)
    assert unknown.returncode == 2 and "no row of" in unknown.stderr and "Traceback" not in unknown.stderr
    write_deltalake(str(tmp_path / "plain"), pa.table({"id": [1, 2]}))
    plain = _ecoval("report", "--table", str(tmp_path / "plain"), cwd=tmp)
    assert plain.returncode == 2 and "has no value columns" in plain.stderr


def test_sql_prints_queries_that_run(valued, spark) -> None:
    path, tmp, _, _ = valued
    out = _ecoval("sql", "--table", str(path), cwd=tmp)
    assert out.returncode == 0, out.stderr
    queries = ready_queries(path)
    for query in queries.values():
        assert query in out.stdout
    table = DeltaTable(str(path)).to_pyarrow_table().to_pandas()
    valued = table[table["ecoval_value"].notna()]
    counts = {name: spark.sql(query).count() for name, query in queries.items()}
    assert counts["clean rows (keep for training)"] == int(
        ((valued["ecoval_value"] > 0) & ~valued["ecoval_suspect"].astype(bool)).sum()
    )
    assert counts["suspect rows (review the labels), lowest value first"] == int(valued["ecoval_suspect"].sum())
    assert counts["lowest 5% by value"] == int((valued["ecoval_percentile"] < 0.05).sum())
    assert counts["clusters by value"] == valued["ecoval_cluster"].nunique()
    assert counts["rows not valued yet"] == len(table) - len(valued)


@pytest.mark.spark
def test_sql_creates_the_views_from_the_command_line(valued) -> None:
    path, tmp, _, _ = valued
    out = _ecoval("sql", "--table", str(path), "--create-views", cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    table = DeltaTable(str(path)).to_pyarrow_table().to_pandas()
    suspects = int(table["ecoval_suspect"].sum())
    assert f"-- view events_ecoval_suspect created in the Spark catalog: {suspects} rows" in out.stdout
    assert "-- view events_ecoval_clean created in the Spark catalog: " in out.stdout


def test_views_in_the_spark_catalog(valued, spark) -> None:
    path, _, _, _ = valued
    counts = create_views(spark, path, "events")
    clean, suspect = view_names("events")
    table = DeltaTable(str(path)).to_pyarrow_table().to_pandas()
    assert counts[suspect] == int(table["ecoval_suspect"].fillna(False).astype(bool).sum())
    assert spark.table(clean).count() == counts[clean] > 0
    with pytest.raises(Exception, match="not a plain identifier"):
        view_names("events; DROP VIEW x")


def test_run_ids_are_tokens_not_identifiers(tmp_path) -> None:
    """MLflow run ids are hex and may start with a digit; anything that could end a literal is refused."""
    queries = ready_queries(tmp_path, run_id="7c352f71380a478ba8093cb094f542cc")
    assert (
        "ecoval_run_id = '7c352f71380a478ba8093cb094f542cc'"
        in queries["rows valued by run 7c352f71380a478ba8093cb094f542cc"]
    )
    for bad in ("x' OR '1'='1", "", "a b", "a;b"):
        with pytest.raises(InvalidInputError, match="letters, digits, _ and - only"):
            ready_queries(tmp_path, run_id=bad)


def test_quarantine_preview_on_a_string_keyed_table_with_flipped_labels(tmp_path) -> None:
    """`report --preview`: each cut's rows, the wrong labels expected there against those flipped, the accuracy."""
    from mlflow import MlflowClient

    X, y = blobs(400, n_classes=3, d=4, noise=0.0, seed=11)
    rng = np.random.default_rng(11)
    flipped = np.zeros(400, dtype=bool)
    flipped[rng.choice(400, 40, replace=False)] = True
    y = np.where(flipped, (y + rng.integers(1, 3, size=400)) % 3, y)
    keys = [f"order-{i:05d}" for i in range(400)]
    path = tmp_path / "orders"
    features = {f"f{j}": X[:, j] for j in range(4)}
    write_deltalake(str(path), pa.table({"order_id": keys, **features, "y": y}))
    run = _ecoval(
        "run", "--table", str(path), "--key", "order_id", "--label", "y", "--features", "f0,f1,f2,f3",
        "--n-clusters", "3", "--engine", "delta-rs", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert [c["cut"] for c in summary["preview"]] == ["none", "1%", "2%", "5%", "10%", "20%", "30%", "suspect"]

    out = _ecoval("report", "--table", str(path), "--preview", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cuts = {c["cut"]: c for c in json.loads(out.stdout)["preview"]}
    table = DeltaTable(str(path)).to_pyarrow_table().to_pandas().sort_values("ecoval_value", kind="stable")
    truth = dict(zip(keys, flipped, strict=True))
    for percent in (5, 10):
        cut = cuts[f"{percent}%"]
        assert cut["rows_removed"] == round(percent / 100 * 400)
        actual = sum(truth[k] for k in table["order_id"].head(cut["rows_removed"]))
        assert 0.6 * actual <= cut["expected_wrong_labels"] <= 1.4 * actual, (cut, actual)
        assert 0.0 < cut["validation_accuracy"] <= 1.0
    assert cuts["suspect"]["rows_removed"] == int(table["ecoval_suspect"].sum())
    assert cuts["suspect"]["validation_accuracy"] is not None
    removed = [c["expected_wrong_labels"] for c in cuts.values()][:7]
    assert removed == sorted(removed) and removed[0] == 0 and removed[-1] < cuts["30%"]["rows_removed"]
    assert cuts["none"]["validation_accuracy"] is not None

    text = _ecoval("report", "--table", str(path), "--preview", "--html", "preview.html", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    five = cuts["5%"]
    line = f"lowest 5%: {five['rows_removed']} rows, about {five['expected_wrong_labels']:.0f} wrong labels"
    assert line in text.stdout
    page = (tmp_path / "preview.html").read_text()
    assert "Quarantine preview" in page and "expected_wrong_labels" in page

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = {f.path for f in client.list_artifacts(summary["run_id"], "review")}
    assert {"review/quarantine_preview.png", "review/quarantine_preview.csv"} <= logged
