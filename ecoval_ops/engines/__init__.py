"""The engines of a run (architecture.md): who checks, embeds, draws, values and writes.

- :class:`DeltaRsEngine` (:mod:`.local`): in-process with delta-rs, numpy and torch (no JVM);
- :class:`SparkEngine` (:mod:`.spark`): every O(n) pass on the executors.

Both run the same passes (:mod:`ecoval_ops.lakehouse.checks`, :mod:`.rows`) and the same
EcoVal code, draw the same reference set from the keys, and write one MERGE under the same
contract, so their values agree.
"""

from __future__ import annotations

from typing import Any

from ecoval_ops.config import RunConfig
from ecoval_ops.engines.base import Engine, RunRows, value_target
from ecoval_ops.engines.local import DeltaRsEngine
from ecoval_ops.engines.spark import SparkEngine
from ecoval_ops.exceptions import EcovalError

__all__ = ["DeltaRsEngine", "Engine", "RunRows", "SparkEngine", "engine_for", "value_target"]


def engine_for(cfg: RunConfig, **options: Any) -> Engine:
    """The engine ``cfg.engine`` names."""
    if cfg.engine == "delta-rs":
        return DeltaRsEngine()
    if cfg.engine == "spark":
        from ecoval_ops.lakehouse.spark import SparkSizing
        from ecoval_ops.lakehouse.spark_connect import connection_url

        sizing = SparkSizing(cfg.spark.spark_cores, cfg.spark.spark_driver_memory, cfg.spark.spark_executor_memory)
        places = (cfg.source.table, cfg.source.validation_table, cfg.source.values_table, cfg.staging_dir)
        tables = tuple(t for t in places if t is not None)
        remote = cfg.spark.spark_remote or (
            connection_url(cfg.spark.spark_conn_id) if cfg.spark.spark_conn_id else None
        )
        return SparkEngine(**{"sizing": sizing, "tables": tables, "remote": remote, **options})
    raise EcovalError(f"unknown engine {cfg.engine!r}")
