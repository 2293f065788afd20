"""Spark Connect: `ecoval spark-connect` starts a server with Delta, and a run attached to it gives
the values of a run in its own application.

pyspark puts a whole process in Connect mode once it opens a Connect session (its functions then
build Connect plans), so everything attached runs in a child process, as a DAG task or a CLI run does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ecoval_ops.cli import main
from ecoval_ops.config import load_config
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import split_remote
from ecoval_ops.lakehouse.delta_spark import commit_conflicts
from ecoval_ops.lakehouse.spark_connect import connection_url
from ecoval_ops.pipeline import SparkEngine, run_valuation
from tests.conftest import blob_rows, run_config, uuid_keyed
from tests.stack.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.delta]

COMPARED = ["ecoval_value", "ecoval_intrinsic", "ecoval_extrinsic", "ecoval_cluster", "ecoval_suspect"]


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory: pytest.TempPathFactory):
    """A server started as a user does, `ecoval spark-connect`, on a free port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ecoval_ops.cli", "spark-connect", "--master", "local[2]", "--port", str(port)],
        cwd=tmp_path_factory.mktemp("connect"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(server.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=240)
    assert lines and lines[0].startswith("ecoval: Spark Connect listening on sc://"), (lines, server.poll())
    assert lines[0].rstrip().endswith(f":{port} (master local[2])")
    yield f"sc://127.0.0.1:{port}"
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)


def _attached(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def _values(path) -> pa.Table:
    return DeltaTable(str(path)).to_pyarrow_table(columns=["row_id", *COMPARED]).sort_by("row_id")


def test_a_run_over_connect_gives_the_values_of_a_run_in_its_own_application(spark, connect_url, tmp_path) -> None:
    own, attached = tmp_path / "own" / "train", tmp_path / "attached" / "train"
    for path in (own, attached):
        write_deltalake(str(path), uuid_keyed(blob_rows(0, 400)))
    cfg = run_config(own, tmp_path / "own", engine="spark", n_clusters=4)
    # An empty jars folder: a run that started its own application instead of attaching would fail.
    no_jars = tmp_path / "no-jars"
    no_jars.mkdir()
    cli = [sys.executable, "-m", "ecoval_ops.cli", "run", "--table", str(attached), "--key", "row_id"]
    cli += ["--label", "label", "--features", "f0,f1,f2", "--engine", "spark", "--n-clusters", "4", "--json"]
    cli += ["--spark-remote", connect_url, "--mlflow-uri", f"sqlite:///{tmp_path / 'attached' / 'mlflow.db'}"]

    def night(rows: pa.Table | None) -> dict:
        if rows is not None:
            for path in (own, attached):
                write_deltalake(str(path), rows, mode="append", schema_mode="merge")
        mine = run_valuation(cfg, SparkEngine(spark))
        done = subprocess.run(
            cli, capture_output=True, text=True, timeout=600, env={**os.environ, "ECOVAL_DELTA_JARS": str(no_jars)}
        )
        assert done.returncode == 0, done.stderr
        theirs = json.loads(done.stdout)
        assert (theirs["mode"], theirs["rows_valued"]) == (mine.mode, mine.rows_valued)
        a, b = _values(own), _values(attached)
        assert a.column("row_id").equals(b.column("row_id"))
        for column in COMPARED:
            np.testing.assert_allclose(
                a.column(column).to_numpy(zero_copy_only=False).astype(float),
                b.column(column).to_numpy(zero_copy_only=False).astype(float),
                rtol=0,
                atol=1e-9,
                err_msg=column,
            )
        return theirs

    assert night(None)["mode"] == "refit"
    assert night(uuid_keyed(blob_rows(400, 460)))["mode"] == "incremental"
    assert _values(attached).column("ecoval_value").null_count == 0


def test_a_repeated_merge_over_connect_commits_once(connect_url, tmp_path) -> None:
    import pyarrow.parquet as pq

    from ecoval_ops.lakehouse import ensure_value_columns
    from ecoval_ops.valuation import EcoVal
    from tests.conftest import blobs

    X, y = blobs(120, n_classes=2, d=2, noise=0.1, seed=9)
    rows = uuid_keyed(pa.table({"row_id": np.arange(120), "a": X[:, 0], "b": X[:, 1], "label": y}))
    path = tmp_path / "t"
    write_deltalake(str(path), rows)
    ensure_value_columns(path, label="label")
    ev = EcoVal(n_clusters=3).fit(X[:100], y[:100], X[100:], y[100:])
    values = ev.result_.to_arrow(rows.column("row_id").to_numpy(zero_copy_only=False)[:100], "row_id")
    pq.write_table(values, tmp_path / "values.parquet")
    done = _attached(
        """
        import json, sys
        from ecoval_ops.lakehouse.delta_spark import merge_values_spark, run_merge
        from ecoval_ops.lakehouse.spark import spark_session
        from deltalake import DeltaTable

        remote, path, values = sys.argv[1:]
        spark = spark_session(remote=remote)
        first = merge_values_spark(spark, path, values, key="row_id", run_id="s1", source_version=0)
        again = merge_values_spark(spark, path, values, key="row_id", run_id="s1", source_version=0)
        # The run crashed after its MERGE committed and never learnt it: its retry runs the MERGE itself.
        frame = spark.read.parquet(values)
        run_merge(spark, path, frame, key="row_id", insert=False, run_id="s1", source_version=0)
        print(json.dumps([first, again, DeltaTable(path).version()]))
        """,
        connect_url,
        str(path),
        str(tmp_path / "values.parquet"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [2, None, 2]
    written = DeltaTable(str(path)).to_pyarrow_table().sort_by("row_id")
    assert written.column("ecoval_value").null_count == 20
    history = DeltaTable(str(path)).history()
    assert [h["operation"] for h in history].count("MERGE") == 1


def test_mllib_clusters_over_connect(connect_url, tmp_path) -> None:
    # int64 keys and gapped string labels here; the other runs over Connect are UUID-keyed.
    rows = blob_rows(0, 400)
    names = pa.array(["cat", "dog", "yak"]).take(rows.column("label"))
    path = tmp_path / "train"
    write_deltalake(str(path), rows.set_column(rows.column_names.index("label"), "label", names))
    done = _attached(
        """
        import json, sys
        from pathlib import Path
        from ecoval_ops.pipeline import SparkEngine, run_valuation
        from tests.conftest import run_config

        remote, path, home = sys.argv[1:]
        cfg = run_config(path, Path(home), engine="spark", n_clusters=4)
        summary = run_valuation(cfg, SparkEngine(remote=remote, mllib_min_rows=100))
        print(json.dumps([summary.mode, summary.rows_valued]))
        """,
        connect_url,
        str(path),
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["refit", 400]
    table = DeltaTable(str(path)).to_pyarrow_table()
    assert table.column("ecoval_value").null_count == 0
    assert set(table.column("ecoval_cluster").to_pylist()) <= set(range(4))
    assert set(table.column("ecoval_suggested_label").drop_null().to_pylist()) <= {"cat", "dog", "yak"}


def test_conflicts_over_connect_are_the_conflicts_a_merge_retries() -> None:
    import delta.connect.exceptions as remote

    conflicts = commit_conflicts()
    for name in ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ProtocolChangedException"):
        assert issubclass(getattr(remote, name), conflicts), name


def test_no_server_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    path = tmp_path / "train"
    write_deltalake(str(path), uuid_keyed(blob_rows(0, 50)))
    flags = ["--table", str(path), "--key", "row_id", "--label", "label", "--features", "f0,f1,f2", "--engine", "spark"]
    flags += ["--spark-remote", f"sc://127.0.0.1:{free_port()}/;token=s3cr3t-token"]
    code = main(["run", *flags, "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "no Spark Connect server answers at sc://127.0.0.1:" in err and "s3cr3t" not in err
    assert DeltaTable(str(path)).version() == 0


def test_spark_connect_on_a_taken_port_is_one_line(capsys) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["spark-connect", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ecoval: error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1


def test_spark_remote_keeps_its_token_out_of_pins_and_logs(tmp_path) -> None:
    remote = "sc://spark.example:15002/;user_id=etl;token=s3cr3t-token"
    cfg = run_config(tmp_path / "t", tmp_path, engine="spark", spark_remote=remote)
    assert cfg.pinned()["spark"]["spark_remote"] == "sc://spark.example:15002/;user_id=etl"
    assert cfg.pinned(secrets=True)["spark"]["spark_remote"] == remote
    assert "s3cr3t" not in json.dumps(cfg.loggable())
    with pytest.raises(InvalidInputError, match=r"spark_remote 'spark://m:7077' is not a Spark Connect URL"):
        load_config(None, table=str(tmp_path / "t"), key="k", label="y", features="a", spark_remote="spark://m:7077")
    assert split_remote("sc://[::1]") == ("::1", 15002)


def test_spark_conn_id_reads_an_airflow_connection(monkeypatch) -> None:
    secret = "p@ss word"
    connection = {"conn_type": "spark_connect", "host": "sc://spark.example", "port": 15003}
    connection |= {"login": "etl", "password": secret, "extra": {"use_ssl": True}}
    monkeypatch.setenv("AIRFLOW_CONN_ECOVAL_SPARK", json.dumps(connection))
    assert connection_url("ecoval_spark") == "sc://spark.example:15003/;user_id=etl;token=p%40ss%20word;use_ssl=true"
    monkeypatch.setenv("AIRFLOW_CONN_ECOVAL_PG", json.dumps({"conn_type": "postgres", "host": "db"}))
    with pytest.raises(InvalidInputError, match="'ecoval_pg' is an Airflow connection of type 'postgres'"):
        connection_url("ecoval_pg")
    with pytest.raises(InvalidInputError, match="'ecoval_none': no such Airflow connection"):
        connection_url("ecoval_none")
