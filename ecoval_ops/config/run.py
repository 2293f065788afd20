"""The one typed configuration of a valuation run: :class:`RunConfig`, its groups and the run's own settings.

A configuration is given nested (``{"source": {"table": ...}, "method": {"n_clusters": 8}}``) or
flat (``{"table": ..., "n_clusters": 8}``), as the YAML files, DAG params and flags of earlier
releases are; :func:`nest` sorts flat names into their groups.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ecoval_ops.config.groups import (
    AlertSettings,
    MethodSettings,
    SourceSettings,
    SparkSettings,
    Table,
    TrackingSettings,
    table_refs,
)
from ecoval_ops.exceptions import RenamedSettingWarning
from ecoval_ops.identifiers import remote_without_token, scrub_uri
from ecoval_ops.storage import is_secret_option, loggable_options, parse_storage_options

__all__ = [
    "OUTPUT_SETTINGS",
    "RENAMED",
    "RunConfig",
    "current_name",
    "default_tracking_uri",
    "flat_settings",
    "groups",
    "merge_groups",
    "nest",
    "tracking_store_exists",
]

OUTPUT_SETTINGS = frozenset({"quiet", "json_output"})
"""Settings of a terminal's output only, which a scheduled run (the DAG) has no use for."""

RENAMED = {"clusters": "n_clusters", "reference_rows": "max_reference_rows"}
"""Setting names of earlier releases, still read (with a warning), by their names now: EcoVal's own."""


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: the MLflow store when none is named."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_store_exists(uri: str) -> bool:
    """False for a SQLite store that is not there (reading it would create an empty one)."""
    prefix = "sqlite:///"
    return not uri.startswith(prefix) or Path(uri[len(prefix) :]).exists()


class RunConfig(BaseModel):
    """Configuration of one valuation run: five settings groups and the run's own settings.

    Every setting is a flag, a YAML key and a DAG param under its field name
    (:func:`~ecoval_ops.config.settings`); ``ecoval run --help`` lists them with their descriptions.

    Attributes:
        source: the tables and columns (:class:`SourceSettings`).
        method: EcoVal's parameters: ``EcoVal(**cfg.method.model_dump())`` is the run's estimator.
        tracking: MLflow (:class:`TrackingSettings`).
        alerts: the night's alert thresholds (:class:`AlertSettings`).
        spark: the Spark engine's applications or Connect server (:class:`SparkSettings`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)

    source: SourceSettings
    refit: Literal["auto", "always", "never"] = Field(default="auto", description="refit policy")
    engine: Literal["spark", "delta-rs"] = Field(default="spark", description="execution engine")
    shards: int = Field(
        default=1, ge=1, description="groups of leave-cluster-out trainings (Airflow maps one task per shard)"
    )
    staging_dir: Table | None = Field(
        default=None,
        description="the run workspace, a folder or an object-store prefix every task and executor reaches "
        "(default <table parent>/_ecoval/<table name>, beside the table on its storage)",
    )
    method: MethodSettings = Field(default_factory=MethodSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    quiet: bool = Field(default=False, description="print nothing but errors")
    json_output: bool = Field(default=False, alias="json", description="print a machine-readable summary")

    @model_validator(mode="before")
    @classmethod
    def _nested(cls, data: Any) -> Any:
        """Flat names into their groups; the workspace opened with the source's storage options."""
        if not isinstance(data, Mapping):
            return data
        out = nest(data)
        return table_refs(out, ("staging_dir",), parse_storage_options(out.get("source", {}).get("storage_options")))

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI, defaulting to a SQLite file in the working directory."""
        return self.tracking.mlflow_uri or default_tracking_uri()

    @property
    def registered_model_name(self) -> str:
        """The model name, defaulting to ``ecoval_<table folder name>`` made identifier-safe."""
        return self.tracking.model_name or "ecoval_" + re.sub(r"[^A-Za-z0-9_]", "_", self.source.table.name)

    def pinned(self, *, secrets: bool = False) -> dict[str, Any]:
        """The settings as JSON-able values, nested by group, for the run reference.

        ``RunConfig.model_validate(pinned(secrets=True))`` rebuilds this configuration exactly, in
        any process. Without ``secrets`` the secret storage options and ``spark_remote``'s token are
        left out: a reference that reaches XCom, a log or a command line carries none, and the
        process that reads it takes them from its own environment (:meth:`with_storage_options`)
        or its Airflow connection (``spark_conn_id``).
        """
        pinned = self.model_dump(mode="json", exclude=set(OUTPUT_SETTINGS), exclude_none=True)
        options = self.source.storage_options
        if options and not secrets:
            pinned["source"]["storage_options"] = {k: v for k, v in options.items() if not is_secret_option(k)}
        if self.spark.spark_remote and not secrets:
            pinned["spark"]["spark_remote"] = remote_without_token(self.spark.spark_remote)
        return pinned

    def with_settings(self, **settings: Any) -> RunConfig:
        """This configuration with the given settings (flat names, as flags) changed, validated again."""
        merged = merge_groups(self.pinned(secrets=True), nest(settings))
        return RunConfig.model_validate({**merged, "quiet": self.quiet, "json": self.json_output})

    def with_storage_options(self, options: Mapping[str, str] | None) -> RunConfig:
        """This configuration with ``options`` added to its storage options (the given ones win)."""
        if not options:
            return self
        return self.with_settings(storage_options={**(self.source.storage_options or {}), **options})

    def flat(self) -> Iterator[tuple[str, Any]]:
        """Each setting by its flat name, with its value, groups in field order."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                yield from ((field, getattr(value, field)) for field in type(value).model_fields)
            else:
                yield name, value

    def loggable(self) -> dict[str, str]:
        """The configuration as flat strings, URIs scrubbed, for logs and MLflow params."""
        out = {}
        for name, value in self.flat():
            if value is None:
                continue
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in loggable_options(value).items())
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            out[name] = scrub_uri(text) if name in ("mlflow_uri", "spark_remote") else text
        out["mlflow_uri"] = scrub_uri(self.tracking_uri)
        out["model_name"] = self.registered_model_name
        return out


def merge_groups(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (nested, as :func:`nest` gives) with ``update``'s settings over it, group by group."""
    for name, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **value}
        else:
            base[name] = value
    return base


@cache
def groups() -> dict[str, type[BaseModel]]:
    """The settings groups of :class:`RunConfig` by field name."""
    out = {}
    for name, field in RunConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[name] = field.annotation
    return out


@cache
def _group_of() -> dict[str, str]:
    return {setting: group for group, model in groups().items() for setting in model.model_fields}


def current_name(name: str) -> str:
    """``name`` with dashes as underscores; a name of :data:`RENAMED` as it is now, with a warning."""
    name = name.replace("-", "_")
    if name in RENAMED:
        warnings.warn(
            f"setting {name} is now {RENAMED[name]}; read as {RENAMED[name]}", RenamedSettingWarning, stacklevel=4
        )
        return RENAMED[name]
    return name


def flat_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration given flat, nested or mixed, by flat names (earlier names as they are now)."""
    out: dict[str, Any] = {}
    for given, value in values.items():
        name = current_name(str(given))
        if name in groups() and isinstance(value, Mapping):
            out.update(flat_settings(value))
        else:
            out[name] = value
    return out


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration given flat, nested or mixed, as :class:`RunConfig`'s nested fields.

    Unknown names stay at the top, for validation to name them.
    """
    group_of, out = _group_of(), dict[str, Any]()
    for name, value in flat_settings(values).items():
        if name in group_of:
            out.setdefault(group_of[name], {})[name] = value
        else:
            out[name] = value
    return out
