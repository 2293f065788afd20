"""The one SparkSession factory: Spark with Delta Lake (architecture.md, "Engines").

Delta's jars are resolved as Delta documents it: ``configure_spark_with_delta_pip`` sets
``spark.jars.packages`` to the jars of the installed pip ``delta-spark`` (4.4.0, whose
``delta-spark_4.2_2.13`` Maven Central serves), which Spark fetches with their dependencies on
the first start and caches under ``~/.ivy2*``; ``ecoval run --engine spark`` works from any shell
once the package is installed. An air-gapped cluster points ``ECOVAL_DELTA_JARS`` at a folder of
the same jars instead (``make jars`` fetches them with Maven into ``.jars/``); where that folder is
at the same path on every node (one image for every container), ``ECOVAL_JARS_ON_NODES=true``
puts it on the driver's and executors' class path instead of shipping the jars (the AWS SDK
bundle alone is 650 MB) to each application's executors.

Spark's JVM logs errors only (``log4j2.properties`` beside this module; ``ECOVAL_SPARK_LOG4J``
names another file), so a run prints its own summary rather than Spark's start-up chatter.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import EcovalError
from ecoval_ops.storage import TableRef, s3_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "DELTA_JARS_ENV",
    "JARS_ON_NODES_ENV",
    "LOG4J_ENV",
    "MASTER_ENV",
    "S3A_PACKAGE",
    "SparkSizing",
    "StartupOutput",
    "application_confs",
    "master_url",
    "reach_tables",
    "session_confs",
    "spark_session",
]

DELTA_JARS_ENV = "ECOVAL_DELTA_JARS"
JARS_ON_NODES_ENV = "ECOVAL_JARS_ON_NODES"
MASTER_ENV = "ECOVAL_SPARK_MASTER"
LOG4J_ENV = "ECOVAL_SPARK_LOG4J"
_LOG4J = Path(__file__).with_name("log4j2.properties")
S3A_PACKAGE = "org.apache.hadoop:hadoop-aws:3.5.0"
"""Hadoop's S3 connector of the Hadoop 3.5.0 the pyspark wheel ships (it brings the AWS SDK v2 bundle)."""


@dataclass(frozen=True)
class SparkSizing:
    """What one Spark application of a run may take (the run's ``spark_*`` settings).

    Every task of a DAG run starts its own application; unsized, each takes every core of a
    standalone cluster (``spark.cores.max`` unset) and the next one waits for them.

    Attributes:
        cores: ``spark.cores.max`` on a cluster, ``local[cores]`` in local mode; None: all.
        driver_memory: ``spark.driver.memory``; None: 4g in local mode, where the driver does all
            the work (Spark's 1g thrashes on a million 64-d embeddings), 1g on a cluster.
        executor_memory: ``spark.executor.memory`` on a cluster; None: Spark's default.
    """

    cores: int | None = None
    driver_memory: str | None = None
    executor_memory: str | None = None


def application_confs(
    app_name: str = "ecoval",
    *,
    master: str | None = None,
    shuffle_partitions: int = 4,
    sizing: SparkSizing | None = None,
    s3: bool = False,
) -> dict[str, str]:
    """Every setting of a Spark application ecoval starts: its own session's, or the Connect server's.

    Args: see :func:`spark_session`; ``s3`` adds Hadoop's ``s3a`` connector (:data:`S3A_PACKAGE`).

    Raises:
        EcovalError: ``ECOVAL_DELTA_JARS`` names a folder without jars.
    """
    log4j = Path(os.environ.get(LOG4J_ENV) or _LOG4J).resolve().as_uri()
    sizing = sizing or SparkSizing()
    master = master_url(master, sizing)
    local = master.startswith("local")
    confs = {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        **session_confs(shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": sizing.driver_memory or ("4g" if local else "1g"),
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j}",
        "spark.executor.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j}",
    }
    if not local and sizing.cores is not None:
        confs["spark.cores.max"] = str(sizing.cores)
    if not local and sizing.executor_memory is not None:
        confs["spark.executor.memory"] = sizing.executor_memory
    return {**confs, **_jar_confs(s3)}


def master_url(master: str | None, sizing: SparkSizing) -> str:
    """``master``, else ``$ECOVAL_SPARK_MASTER``, else ``local[N]`` (N: ``sizing.cores``, else all)."""
    return master or os.environ.get(MASTER_ENV) or f"local[{sizing.cores or '*'}]"


def session_confs(shuffle_partitions: int = 4) -> dict[str, str]:
    """The SQL settings of an ecoval session, which a session attached to a shared server sets too."""
    return {
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        # Delta reads its log with 50 partitions by default: far too many tasks on one machine.
        "spark.databricks.delta.snapshotPartitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
    }


def _jar_confs(s3: bool) -> dict[str, str]:
    """Where the application finds Delta's jars (and the ``s3a`` connector's where ``s3``)."""
    folder = os.environ.get(DELTA_JARS_ENV)
    if not folder:
        from delta import configure_spark_with_delta_pip
        from pyspark.sql import SparkSession

        # Delta names its jars on a builder only (it refuses anything else); a fresh one holds
        # just what it set, which the Connect server's command line takes too.
        builder = configure_spark_with_delta_pip(SparkSession.Builder(), extra_packages=[S3A_PACKAGE] if s3 else None)
        return {str(k): str(v) for k, v in builder._options.items()}
    jars = sorted(str(p) for p in Path(folder).glob("*.jar"))
    if not jars:
        raise EcovalError(f"{DELTA_JARS_ENV}={folder} holds no jars; run `make jars` to fetch them, or unset it")
    if os.environ.get(JARS_ON_NODES_ENV, "").lower() == "true":
        classpath = str(Path(folder).resolve() / "*")
        return {"spark.driver.extraClassPath": classpath, "spark.executor.extraClassPath": classpath}
    return {"spark.jars": ",".join(jars)}


def spark_session(
    app_name: str = "ecoval",
    *,
    master: str | None = None,
    remote: str | None = None,
    shuffle_partitions: int = 4,
    sizing: SparkSizing | None = None,
    tables: Sequence[TableRef] = (),
) -> SparkSession:
    """Return the active SparkSession, attach to a Spark Connect server, or start one with Delta Lake.

    Args:
        app_name: Spark application name.
        master: Spark master URL. Default ``$ECOVAL_SPARK_MASTER``, else ``local[*]`` (or
            ``local[N]`` where ``sizing`` names N cores).
        remote: a Spark Connect server (``sc://host:port``) to attach to instead of starting an
            application (``ecoval spark-connect`` starts one with Delta); ``master`` and ``sizing``
            are then the server's business.
        shuffle_partitions: ``spark.sql.shuffle.partitions`` (Spark's 200 is far too many for
            one machine). Default 4.
        sizing: the cores and memory of the new application. Default :class:`SparkSizing`'s.
        tables: the tables the session reads and writes; one on S3 adds Hadoop's ``s3a``
            connector (:data:`S3A_PACKAGE`) to a new application, and :func:`reach_tables`
            gives the session their buckets' settings.

    Raises:
        EcovalError: ``ECOVAL_DELTA_JARS`` names a folder without jars; Spark did not start; no
            Spark Connect server answers at ``remote``.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if remote:
        from ecoval_ops.lakehouse.spark_connect import attach

        return reach_tables(attach(remote, session_confs(shuffle_partitions)), tables)
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in application_confs(
        app_name, master=master, shuffle_partitions=shuffle_partitions, sizing=sizing, s3=any(t.is_s3 for t in tables)
    ).items():
        builder = builder.config(key, value)
    with _quiet_start() as startup:
        try:
            return reach_tables(builder.getOrCreate(), tables)
        except PySparkRuntimeError as e:
            startup.show()
            folder = os.environ.get(DELTA_JARS_ENV)
            where = f"the jars in {DELTA_JARS_ENV}={folder}" if folder else "Delta's jars resolved from Maven Central"
            raise EcovalError(
                f"Spark could not start with {where} (its output is above); where Central cannot be reached, "
                f"fetch them with `make jars` and set {DELTA_JARS_ENV}=<project>/.jars, or use --engine delta-rs"
            ) from e


def reach_tables(spark: SparkSession, tables: Sequence[TableRef]) -> SparkSession:
    """Give ``spark`` the ``s3a`` settings of each S3 table's bucket; returns ``spark``.

    They are session settings, which Spark copies into the Hadoop configuration of every read
    and write, so a session started before (a shared one) reaches the tables too.
    """
    for table in tables:
        for key, value in s3_settings(table).items():
            spark.conf.set(key, value)
    return spark


class StartupOutput:
    """What a JVM prints while it starts: held back, shown only if the start fails, passed on after.

    :meth:`pump` reads the JVM's standard error (a pipe's read end) on a thread of its own; once
    :attr:`started` is set, lines reach ``stderr`` as they come.
    """

    def __init__(self, stderr: int) -> None:
        self.stderr = stderr
        self.lines: list[bytes] = []
        self.started = threading.Event()

    def pump(self, source: int) -> None:
        """Read the file descriptor ``source`` to its end, holding or passing on each line."""
        with os.fdopen(source, "rb", buffering=0) as stream:
            for line in iter(stream.readline, b""):
                if self.started.is_set():
                    os.write(self.stderr, line)
                else:
                    self.lines.append(line)

    def show(self) -> None:
        """Write the lines held back to ``stderr``."""
        os.write(self.stderr, b"".join(self.lines))


@contextmanager
def _quiet_start() -> Iterator[StartupOutput]:
    """Hold back what a starting JVM prints: the Ivy report of Delta's jars, JVM notices.

    Once it has started, its output (errors only, by the log4j file) reaches stderr. The JVM
    inherits the process's standard error when it is launched, so a pipe stands in for it during
    the start, and a thread forwards the pipe to the real stderr from then on.
    """
    sys.stderr.flush()
    read, write = os.pipe()
    saved = os.dup(2)
    startup = StartupOutput(saved)
    threading.Thread(target=startup.pump, args=(read,), name="ecoval-jvm-stderr", daemon=True).start()
    os.dup2(write, 2)
    os.close(write)
    try:
        yield startup
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        startup.started.set()
