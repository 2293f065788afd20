"""The Airflow tasks of ``dags/ecoval_nightly.py``: each calls one step of :mod:`.steps`.

Tasks receive the DAG run's params (the names of ``ecoval run``'s flags in snake_case) and
the run reference as a plain dict, and return plain dicts for XCom; no data passes between
tasks. A param left empty takes the Airflow Variable ``ecoval_<name>``, then the environment
variable ``ECOVAL_<NAME>``, then :class:`~ecoval_ops.config.RunConfig`'s default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ecoval_ops.config import RunConfig, load_config
from ecoval_ops.pipeline import steps
from ecoval_ops.pipeline.engines import engine_for

__all__ = [
    "PARAMS",
    "branch",
    "cluster",
    "config_from_params",
    "decide",
    "detect",
    "embed",
    "fail",
    "fit_model",
    "param_default",
    "propagate",
    "report",
    "train_shard",
    "write",
]

log = logging.getLogger(__name__)

PARAMS = (
    "table",
    "key",
    "label",
    "features",
    "embedding_col",
    "validation_table",
    "validation_fraction",
    "refit",
    "mlflow_uri",
    "experiment",
    "model_name",
    "clusters",
    "budget",
    "seed",
    "engine",
    "shards",
    "staging_dir",
)
"""The DAG's params: ``ecoval run``'s flags in snake_case (plus ``engine``, ``shards``, ``staging_dir``)."""


def param_default(name: str) -> str | None:
    """The default of a param when the DAG is parsed: ``ECOVAL_<NAME>`` from the environment."""
    return os.environ.get(f"ECOVAL_{name.upper()}")


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    value = Variable.get(f"ecoval_{name}", default=None)
    return None if value in (None, "") else str(value)


def config_from_params(params: Mapping[str, Any]) -> RunConfig:
    """The run configuration of a DAG run (params, then Variables, then the environment).

    Raises:
        InvalidInputError: a missing or invalid setting, named.
    """
    settings: dict[str, Any] = {}
    for name in PARAMS:
        value = params.get(name)
        if value in (None, ""):
            value = _variable(name) or param_default(name)
        if value not in (None, ""):
            settings[name] = value
    return load_config(None, quiet=True, **settings)


def detect(params: Mapping[str, Any]) -> dict[str, Any]:
    """Pin the source version; count its rows and the new ones."""
    found = steps.detect(config_from_params(params))
    log.info("source version %d: %d rows, %d not valued yet", found.table_version, found.rows, found.new_rows)
    return {"table_version": found.table_version, "rows": found.rows, "new_rows": found.new_rows}


def embed(params: Mapping[str, Any], detected: Mapping[str, Any]) -> int:
    """Embed the rows of the pinned version that have no embedding yet."""
    cfg = config_from_params(params)
    count = steps.embed(cfg, int(detected["table_version"]), engine_for(cfg))
    log.info("embedded %d rows", count)
    return count


def decide(params: Mapping[str, Any], detected: Mapping[str, Any], dag_run_id: str) -> dict[str, Any]:
    """Choose refit, incremental or noop; open the parent MLflow run for the first two.

    A retry of the same DAG run reuses the parent run it opened before.
    """
    ref = steps.decide(config_from_params(params), int(detected["table_version"]), run_key=dag_run_id)
    log.info("mode %s, MLflow run %s", ref.mode, ref.run_id)
    return ref.to_dict()


def branch(ref: Mapping[str, Any]) -> list[str]:
    """The task ids to follow: ``cluster`` (refit), ``propagate`` (both) or ``nothing_to_do``.

    ``propagate`` follows a refit as well, where it waits for ``fit_model``; a branch skips
    the direct downstream tasks it does not name.
    """
    mode = ref["mode"]
    if mode == "refit":
        return ["cluster", "propagate"]
    if mode == "incremental":
        return ["propagate"]
    return ["nothing_to_do"]


def cluster(params: Mapping[str, Any], ref: Mapping[str, Any]) -> list[int]:
    """Cluster and plan the LCO trainings; the shard indices to map over."""
    cfg = config_from_params(params)
    shards = steps.cluster(cfg, steps.RunRef.from_dict(dict(ref)), engine_for(cfg))
    log.info("%d LCO shards", len(shards))
    return shards


def train_shard(params: Mapping[str, Any], ref: Mapping[str, Any], index: int) -> int:
    """Train one shard of the LCO models (a child MLflow run); returns its index."""
    steps.train_shard(config_from_params(params), steps.RunRef.from_dict(dict(ref)), index)
    return index


def fit_model(params: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, Any]:
    """Fit the production function and register the valuation model (alias ``current``)."""
    fitted = steps.fit_model(config_from_params(params), steps.RunRef.from_dict(dict(ref)))
    log.info("registered model version %s", fitted.model_version)
    return fitted.to_dict()


def propagate(params: Mapping[str, Any], ref: Mapping[str, Any]) -> int:
    """Value the run's rows (in sample from the fit, the rest out of sample)."""
    cfg = config_from_params(params)
    count = steps.propagate(cfg, steps.RunRef.from_dict(dict(ref)), engine_for(cfg))
    log.info("valued %d rows", count)
    return count


def write(params: Mapping[str, Any], ref: Mapping[str, Any]) -> int | None:
    """One MERGE of the values; None when a previous try had committed it."""
    cfg = config_from_params(params)
    written = steps.write(cfg, steps.RunRef.from_dict(dict(ref)), engine_for(cfg))
    log.info("table version written: %s", written)
    return written


def report(params: Mapping[str, Any], ref: Mapping[str, Any], written: int | None) -> dict[str, Any]:
    """Log the run's figures and close the parent run."""
    figures = steps.report(config_from_params(params), steps.RunRef.from_dict(dict(ref)), written)
    log.info("run figures: %s", figures)
    return figures


def fail(params: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
    """Close the parent run FAILED after a failed task (its workspace stays for a retry)."""
    steps.fail(config_from_params(params), steps.RunRef.from_dict(dict(ref)))
