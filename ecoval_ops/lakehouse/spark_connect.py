"""Spark that outlives the tasks: a Spark Connect server with Delta, and the runs that attach to it.

Every Spark step of a run either starts its own application (8-29 s of each task) or, given
``spark_remote`` (``sc://host:port``) or an Airflow connection of type ``spark_connect``
(``spark_conn_id``), attaches to a long-lived Spark Connect server with
``SparkSession.builder.remote``. The engine's code is the same both ways: it reads with
``spark.read.format("delta")`` pinned by ``versionAsOf``, appends, and MERGEs by SQL, because
Delta's Connect plugin (``DeltaTable`` over Connect) does not resolve from Maven Central.

``ecoval spark-connect`` starts the server in the foreground with Delta's jars, the ``s3a``
connector and the Delta SQL extension (:func:`~ecoval_ops.lakehouse.spark.application_confs`,
the settings of every application ecoval starts), and its Python workers run this
environment's interpreter, which holds the project (``mapInPandas`` runs on the server's side).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

from ecoval_ops.exceptions import EcovalError, InvalidInputError
from ecoval_ops.identifiers import scrub_uri, split_remote
from ecoval_ops.lakehouse.spark import SparkSizing, StartupOutput, application_confs, master_url

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["SERVER_CLASS", "attach", "connection_url", "serve", "server_command"]

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def attach(remote: str, confs: Mapping[str, str]) -> SparkSession:
    """A session of the Spark Connect server at ``remote``, with ecoval's SQL settings ``confs``.

    The address is tried first with a plain connection: Spark's client retries an unreachable
    server for minutes before it gives up, where a run should say at once that none answers.

    Raises:
        EcovalError: no server answers at ``remote``, or it refused the session.
    """
    from pyspark.errors.exceptions.connect import SparkConnectException
    from pyspark.sql import SparkSession

    host, port = split_remote(remote)
    shown = scrub_uri(remote)
    refused = _refusal(host, port, timeout=10)
    if refused is not None:
        raise EcovalError(
            f"no Spark Connect server answers at {shown} ({refused}); start one with `ecoval spark-connect`"
        )
    try:
        spark = SparkSession.builder.remote(remote.strip()).getOrCreate()
        for key, value in confs.items():
            spark.conf.set(key, value)
    except SparkConnectException as e:
        raise EcovalError(f"the Spark Connect server at {shown} refused the session: {_first_line(e)}") from None
    return spark


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def connection_url(conn_id: str) -> str:
    """The ``sc://`` URL of the Airflow connection ``conn_id`` (type ``spark_connect``).

    The convention of Airflow's Spark provider (``SparkConnectHook``): host (with or without
    ``sc://``) and port, the login as ``user_id``, the password as ``token``, and
    ``{"use_ssl": true}`` in the extra.

    Raises:
        InvalidInputError: no such connection, or one of another type.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    try:
        conn = BaseHook.get_connection(conn_id)
    except (AirflowNotFoundException, AirflowRuntimeError) as e:
        raise InvalidInputError(f"spark_conn_id {conn_id!r}: no such Airflow connection") from e
    if conn.conn_type != "spark_connect":
        raise InvalidInputError(
            f"spark_conn_id {conn_id!r} is an Airflow connection of type {conn.conn_type!r}, not spark_connect"
        )
    host = (conn.host or "").removeprefix("sc://").rstrip("/")
    if not host:
        raise InvalidInputError(f"spark_conn_id {conn_id!r} has no host")
    params = []
    if conn.login:
        params.append(f"user_id={quote(conn.login)}")
    if conn.password:
        params.append(f"token={quote(conn.password)}")
    use_ssl = conn.extra_dejson.get("use_ssl")
    if use_ssl is not None:
        params.append(f"use_ssl={quote(str(use_ssl).lower())}")
    port = f":{conn.port}" if conn.port else ""
    return f"sc://{host}{port}/" + "".join(f";{p}" for p in params)


def server_command(*, master: str | None, host: str | None, port: int, sizing: SparkSizing) -> list[str]:
    """The ``spark-submit`` command line of a Spark Connect server with ecoval's settings."""
    from pyspark.find_spark_home import _find_spark_home

    # A shared server serves every table, so it always has the s3a connector.
    confs = application_confs("ecoval-spark-connect", master=master, sizing=sizing, s3=True)
    confs["spark.connect.grpc.binding.port"] = str(port)
    if host:
        confs["spark.connect.grpc.binding.address"] = host
    command = [os.path.join(_find_spark_home(), "bin", "spark-submit"), "--class", SERVER_CLASS]
    for key, value in confs.items():
        command += ["--conf", f"{key}={value}"]
    return command


def serve(*, master: str | None, host: str | None, port: int, sizing: SparkSizing) -> int:
    """Run a Spark Connect server in the foreground until it ends or is stopped (SIGTERM, SIGINT).

    What the JVM prints while it starts (the jars' resolution) is held back and shown only if it
    fails; once it listens, one line says where, and its errors reach stderr.

    Returns:
        The server's exit status.

    Raises:
        EcovalError: the port is taken, or the server ended before it listened.
    """
    bind = host or "0.0.0.0"
    try:
        with socket.create_server((bind, port)):
            pass
    except OSError as e:
        raise EcovalError(f"cannot listen on {bind}:{port}: {e.strerror or e}") from None
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    command = server_command(master=master, host=host, port=port, sizing=sizing)
    read, write = os.pipe()
    output = StartupOutput(sys.stderr.fileno())
    pump = threading.Thread(target=output.pump, args=(read,), name="ecoval-connect-stderr", daemon=True)
    pump.start()
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=write, preexec_fn=_end_with_parent)
    os.close(write)
    stopped = threading.Event()

    def stop(*_: object) -> None:
        stopped.set()
        server.terminate()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    probe = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    while server.poll() is None and _refusal(probe, port, timeout=1) is not None:
        time.sleep(0.5)
    if server.poll() is not None and not stopped.is_set():
        pump.join(timeout=5)
        output.show()
        raise EcovalError(
            f"the Spark Connect server ended before it listened (exit {server.returncode}); its output is above"
        )
    output.started.set()
    where = socket.getfqdn() if bind in ("0.0.0.0", "::") else bind
    print(f"ecoval: Spark Connect listening on sc://{where}:{port} (master {master_url(master, sizing)})", flush=True)
    code = server.wait()
    return 0 if stopped.is_set() else code


def _refusal(host: str, port: int, *, timeout: float) -> str | None:
    """Why nothing answers at ``host:port``; None when something does."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def _end_with_parent() -> None:
    """Have the kernel stop the server's JVM when ``ecoval spark-connect`` dies (even by SIGKILL)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
