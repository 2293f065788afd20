"""The one SparkSession factory: local Spark with Delta Lake (architecture.md, "Engines").

Delta's jars come from one of two places:

- ``ECOVAL_DELTA_JARS``: a folder of jars fetched with Maven (``make`` does this into
  ``.jars/``). This is the path used here: Spark's own resolver cannot reach Maven Central on
  these machines, and Central serves ``delta-spark_4.2_2.13`` up to 4.4.0 while the pip package
  (4.4.1) would ask for 4.4.1; the 4.4.0 jars run under the 4.4.1 Python API.
- otherwise ``configure_spark_with_delta_pip``, which resolves the matching jars with Spark's
  ``spark.jars.packages`` on first start and caches them under ``~/.ivy2*``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ecoval_ops.exceptions import EcovalError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DELTA_JARS_ENV", "MASTER_ENV", "spark_session"]

DELTA_JARS_ENV = "ECOVAL_DELTA_JARS"
MASTER_ENV = "ECOVAL_SPARK_MASTER"


def spark_session(
    app_name: str = "ecoval", *, master: str | None = None, shuffle_partitions: int = 4, driver_memory: str = "4g"
) -> SparkSession:
    """Return the active SparkSession, or start one with Delta Lake configured.

    Args:
        app_name: Spark application name.
        master: Spark master URL. Default ``$ECOVAL_SPARK_MASTER``, else ``local[*]``.
        shuffle_partitions: ``spark.sql.shuffle.partitions`` (Spark's 200 is far too many for
            one machine). Default 4.
        driver_memory: ``spark.driver.memory`` of a new session (in local mode the driver does
            all the work; Spark's 1g thrashes on a million 64-d embeddings). Default 4g.

    Raises:
        EcovalError: ``ECOVAL_DELTA_JARS`` names a folder without jars.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master or os.environ.get(MASTER_ENV, "local[*]"))
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Delta reads its log with 50 partitions by default: far too many tasks on one machine.
        .config("spark.databricks.delta.snapshotPartitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", driver_memory)
    )
    folder = os.environ.get(DELTA_JARS_ENV)
    if folder:
        jars = sorted(str(p) for p in Path(folder).glob("*.jar"))
        if not jars:
            raise EcovalError(f"{DELTA_JARS_ENV}={folder} holds no jars; run `make install` to fetch them")
        return builder.config("spark.jars", ",".join(jars)).getOrCreate()
    from delta import configure_spark_with_delta_pip
    from pyspark.errors import PySparkRuntimeError

    try:
        return configure_spark_with_delta_pip(builder).getOrCreate()
    except PySparkRuntimeError as e:
        raise EcovalError(
            "Spark could not start with Delta's jars resolved from Maven Central (see the log above); "
            f"fetch them with `make install` and set {DELTA_JARS_ENV}=<project>/.jars, or use --engine delta-rs"
        ) from e
