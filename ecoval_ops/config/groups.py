"""The settings groups of a run: where its rows are, the method, MLflow, Spark, the night's alerts.

Each field is defined here once (the method's in :class:`~ecoval_ops.valuation.EcoVal`'s
signature, :data:`MethodSettings`); its name is unique over every group, so a flat name (a flag, a
DAG param, ``ECOVAL_<NAME>``) says which group it belongs to (:mod:`.resolve`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from ecoval_ops.identifiers import check_identifier, split_remote
from ecoval_ops.storage import TableRef, parse_storage_options
from ecoval_ops.valuation import EcoVal
from ecoval_ops.valuation.params import settings_model

__all__ = [
    "AlertSettings",
    "MethodSettings",
    "SourceSettings",
    "SparkSettings",
    "Table",
    "TrackingSettings",
    "column_list",
    "table_refs",
]

Table = Annotated[TableRef, PlainSerializer(str, return_type=str)]
"""A table setting: a path or URI, opened with the run's ``storage_options`` (JSON: the URI)."""

_GROUP = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

if TYPE_CHECKING:

    class MethodSettings(BaseModel):
        """The estimator's parameters of a plain type (built from its signature at run time)."""

        def __getattr__(self, name: str) -> Any: ...

else:
    MethodSettings = settings_model(EcoVal)


def table_refs(values: Mapping[str, Any], names: tuple[str, ...], options: dict[str, str] | None) -> dict[str, Any]:
    """``values`` with each of the table settings ``names`` given as a :class:`TableRef` opened with ``options``."""
    out = dict(values)
    for name in names:
        if out.get(name) not in (None, ""):
            out[name] = TableRef.of(out[name], options)
    return out


def column_list(value: Any, what: str, field: str) -> tuple[str, ...] | None:
    """A comma-separated string or a list of column names as a tuple of checked identifiers."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    if not names or any(not n for n in names):
        raise ValueError(f"{field} must be a non-empty comma-separated list of column names")
    return tuple(check_identifier(n, what) for n in names)


class SourceSettings(BaseModel):
    """The tables a run reads and writes, their columns and how validation rows are chosen."""

    model_config = _GROUP

    table: Table = Field(description="the source Delta table: a path or a URI (s3://bucket/path, abfss://, gs://)")
    key: str = Field(description="row-key column (unique, non-null)")
    label: str = Field(description="label column")
    features: tuple[str, ...] | None = Field(
        default=None, description="comma-separated numeric feature columns (the features embedder)"
    )
    embedding_col: str | None = Field(default=None, description="column holding a precomputed embedding vector")
    image_col: str | None = Field(
        default=None, description="column of image bytes or pixel arrays (needs embedder and weights)"
    )
    embedder: str | None = Field(default=None, description="torchvision:NAME for image_col")
    weights: Path | None = Field(default=None, description="local path of the torchvision weights")
    validation_table: Table | None = Field(default=None, description="a separate Delta table of validation rows")
    values_table: Table | None = Field(
        default=None,
        description="write the value columns to this Delta table, keyed by key, and never alter the source table",
    )
    storage_options: dict[str, str] | None = Field(
        default=None,
        repr=False,
        description="delta-rs storage options of the tables, as JSON or KEY=VALUE,... (the AWS_* environment "
        "variables are read too); secret ones are never pinned, logged or sent to MLflow",
    )
    validation_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=1.0,
        description="share of rows held out by hash of key when there is no validation table",
    )
    validation_rows: int = Field(
        default=20_000,
        ge=10,
        description="most validation rows the trainings are scored on: those of smallest key draw among the "
        "held-out rows or the validation table's",
    )

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, data: Any) -> Any:
        """Each table setting as a :class:`TableRef` carrying the storage options."""
        if not isinstance(data, Mapping):
            return data
        options = parse_storage_options(data.get("storage_options"))
        return table_refs({**data, "storage_options": options}, ("table", "validation_table", "values_table"), options)

    @field_validator("weights")
    @classmethod
    def _normalise(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()

    @field_validator("key", "label", "embedding_col", "image_col")
    @classmethod
    def _identifier(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_identifier(value, f"{info.field_name} column")

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> tuple[str, ...] | None:
        return column_list(value, "feature column", "features")

    @model_validator(mode="after")
    def _one_embedding_source(self) -> SourceSettings:
        given = [n for n in ("features", "embedding_col", "image_col") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of features, embedding_col or image_col; found {given or 'none'}")
        if self.image_col is not None:
            if not (self.embedder or "").startswith("torchvision:") or self.weights is None:
                raise ValueError("image_col needs embedder 'torchvision:<model>' and a local weights path")
        elif self.embedder not in (None, "features"):
            raise ValueError(f"embedder {self.embedder!r} applies to image_col only")
        if self.key == self.label or (self.features and {self.key, self.label} & set(self.features)):
            raise ValueError("key, label and feature columns must be distinct")
        if self.values_table is not None and self.values_table in (self.table, self.validation_table):
            raise ValueError("values_table must be a table of its own, not the source or validation table")
        return self


class TrackingSettings(BaseModel):
    """Where the runs, the registered model and the review go in MLflow."""

    model_config = _GROUP

    mlflow_uri: str | None = Field(default=None, description="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    experiment: str = Field(default="ecoval", description="MLflow experiment")
    model_name: str | None = Field(
        default=None, description="registered valuation model (default ecoval_<table folder name>)"
    )
    review_columns: tuple[str, ...] | None = Field(
        default=None,
        description="comma-separated source columns shown beside the top and bottom rows of the MLflow review",
    )

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        # It reaches MLflow's search filters, so it obeys the column names' allow-list.
        return None if value is None else check_identifier(value, "model_name")

    @field_validator("review_columns", mode="before")
    @classmethod
    def _review_columns(cls, value: Any) -> tuple[str, ...] | None:
        return column_list(value, "column", "review_columns")


class AlertSettings(BaseModel):
    """When a night's new rows are an alert."""

    model_config = _GROUP

    alert_suspect_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="alert when the new rows' suspect share exceeds this (default: twice the model's, 5 points more)",
    )
    alert_drift: float = Field(
        default=0.2, ge=0.0, le=1.0, description="alert when the new rows' cluster shares drift more than this (TV)"
    )


class SparkSettings(BaseModel):
    """The Spark applications of the Spark engine, or the Spark Connect server it attaches to."""

    model_config = _GROUP

    spark_cores: int | None = Field(
        default=None,
        ge=1,
        description="cores of each Spark application of the run: spark.cores.max on a cluster, local[N] "
        "in local mode (default all)",
    )
    spark_driver_memory: str | None = Field(
        default=None, description="spark.driver.memory of each Spark application (default 4g local, 1g on a cluster)"
    )
    spark_executor_memory: str | None = Field(
        default=None, description="spark.executor.memory on a cluster (default Spark's, 1g)"
    )
    spark_remote: str | None = Field(
        default=None,
        description="attach every Spark step to this Spark Connect server (sc://host:port, `ecoval spark-connect`) "
        "instead of starting an application; the spark_cores and memory settings are then the server's",
    )
    spark_conn_id: str | None = Field(
        default=None,
        description="an Airflow connection of type spark_connect naming the Spark Connect server (when no "
        "spark_remote is given; its token stays in the connection)",
    )

    @field_validator("spark_remote")
    @classmethod
    def _remote(cls, value: str | None) -> str | None:
        if value is None:
            return None
        split_remote(value)
        return value.strip()

    @field_validator("spark_driver_memory", "spark_executor_memory")
    @classmethod
    def _memory(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not re.fullmatch(r"[1-9][0-9]*[kmgt]?", value.lower()):
            raise ValueError(f"{info.field_name} must be a JVM memory size such as 512m or 2g, not {value!r}")
        return value
