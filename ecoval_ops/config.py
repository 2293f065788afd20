"""The one typed configuration of a valuation run (architecture.md, "Conventions").

:class:`RunConfig`'s fields are the one list of run settings: ``ecoval run``'s flags, the YAML
keys of ``--config`` and the Airflow DAG's params are all generated from them
(:func:`settings`), with the field's description as their help. Paths are normalised,
identifiers pass the allow-list, and :meth:`RunConfig.loggable` drops secrets from URIs before
anything reaches a log or MLflow.

Where a setting comes from, first given wins (:func:`resolve_settings`):

- ``ecoval run``: flags > the ``--config`` YAML file > the field's default;
- an Airflow DAG run: the run's conf (params) > the Airflow Variable ``ecoval_<name>`` > the
  environment variable ``ECOVAL_<NAME>`` > the field's default.

A value of None or ``""`` counts as not given. The run's ``detect`` step resolves once; every
later step of the run uses that pinned configuration.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import check_identifier, remote_without_token, scrub_uri, split_remote
from ecoval_ops.storage import TableRef, is_secret_option, loggable_options, parse_storage_options

__all__ = [
    "OUTPUT_SETTINGS",
    "RunConfig",
    "Setting",
    "default_tracking_uri",
    "load_config",
    "resolve_settings",
    "settings",
    "tracking_store_exists",
]

OUTPUT_SETTINGS = frozenset({"quiet", "json_output"})
"""Settings of a terminal's output only, which a scheduled run (the DAG) has no use for."""


Table = Annotated[TableRef, PlainSerializer(str, return_type=str)]
"""A table setting: a path or URI, opened with the run's ``storage_options`` (JSON: the URI)."""

TABLE_SETTINGS = ("table", "validation_table", "values_table", "staging_dir")


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: the MLflow store when none is named."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_store_exists(uri: str) -> bool:
    """False for a SQLite store that is not there (reading it would create an empty one)."""
    prefix = "sqlite:///"
    return not uri.startswith(prefix) or Path(uri[len(prefix) :]).exists()


class RunConfig(BaseModel):
    """Configuration of one valuation run; each field is a flag, a YAML key and a DAG param.

    The fields and their meaning are listed by ``ecoval run --help``; each field's
    ``description`` is its help text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)

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
    refit: Literal["auto", "always", "never"] = Field(default="auto", description="refit policy")
    mlflow_uri: str | None = Field(default=None, description="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    experiment: str = Field(default="ecoval", description="MLflow experiment")
    model_name: str | None = Field(
        default=None, description="registered valuation model (default ecoval_<table folder name>)"
    )
    clusters: int | None = Field(default=None, ge=2, description="number of clusters p (default from budget)")
    budget: int | None = Field(default=None, ge=5, description="most model trainings (default 80)")
    seed: int = Field(default=0, description="seed of every random choice")
    learner: Literal["logistic", "mlp"] = Field(
        default="logistic", description="model of the leave-cluster-out trainings"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="device of the trainings")
    k_neighbors: int = Field(default=10, ge=1, description="within-cluster neighbours of the redundancy, k")
    vote_neighbors: int = Field(default=20, ge=1, description="neighbours of the intrinsic label vote")
    halo_clusters: int = Field(default=0, ge=0, description="nearest other clusters whose rows join the neighbours")
    prior_weight: float = Field(
        default=20.0, ge=0.0, description="weight of the leave-cluster-out label prior, in neighbours (m0)"
    )
    c_kappa: float = Field(
        default=20.0, ge=0.0, description="kappa = c_kappa |mu|: a row's own input against its cluster's mean"
    )
    neighbour_search: Literal["exact", "approx", "auto"] = Field(
        default="auto", description="nearest-member search: exact, approx (HNSW), auto (exact below 50,000 per cluster)"
    )
    reference_rows: int = Field(
        default=200_000,
        ge=4,
        description="most training rows that clustering, trainings and neighbours rest on; beyond it a "
        "sample stratified by cluster and label, and every other row is valued against it",
    )
    alert_suspect_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="alert when the new rows' suspect share exceeds this (default: twice the model's, 5 points more)",
    )
    alert_drift: float = Field(
        default=0.2, ge=0.0, le=1.0, description="alert when the new rows' cluster shares drift more than this (TV)"
    )
    review_columns: tuple[str, ...] | None = Field(
        default=None,
        description="comma-separated source columns shown beside the top and bottom rows of the MLflow review",
    )
    engine: Literal["spark", "delta-rs"] = Field(default="spark", description="execution engine")
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
    shards: int = Field(
        default=1, ge=1, description="groups of leave-cluster-out trainings (Airflow maps one task per shard)"
    )
    staging_dir: Table | None = Field(
        default=None,
        description="the run workspace, a folder or an object-store prefix every task and executor reaches "
        "(default <table parent>/_ecoval/<table name>, beside the table on its storage)",
    )
    quiet: bool = Field(default=False, description="print nothing but errors")
    json_output: bool = Field(default=False, alias="json", description="print a machine-readable summary")

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, data: Any) -> Any:
        """Each table setting as a :class:`TableRef` carrying the run's storage options."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        options = parse_storage_options(out.get("storage_options"))
        out["storage_options"] = options
        for name in TABLE_SETTINGS:
            if out.get(name) not in (None, ""):
                out[name] = TableRef.of(out[name], options)
        return out

    @field_validator("weights")
    @classmethod
    def _normalise(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()

    @field_validator("key", "label", "embedding_col", "image_col", "model_name")
    @classmethod
    def _identifier(cls, value: str | None, info: Any) -> str | None:
        # model_name reaches MLflow's search filters, so it obeys the same allow-list.
        what = info.field_name if info.field_name == "model_name" else f"{info.field_name} column"
        return None if value is None else check_identifier(value, what)

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

    @field_validator("features", "review_columns", mode="before")
    @classmethod
    def _column_list(cls, value: Any, info: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        if not names or any(not n for n in names):
            raise ValueError(f"{info.field_name} must be a non-empty comma-separated list of column names")
        return tuple(
            check_identifier(n, "feature column" if info.field_name == "features" else "column") for n in names
        )

    @model_validator(mode="after")
    def _one_embedding_source(self) -> RunConfig:
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

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI, defaulting to a SQLite file in the working directory."""
        return self.mlflow_uri or default_tracking_uri()

    @property
    def registered_model_name(self) -> str:
        """The model name, defaulting to ``ecoval_<table folder name>`` made identifier-safe."""
        return self.model_name or "ecoval_" + re.sub(r"[^A-Za-z0-9_]", "_", self.table.name)

    def pinned(self, *, secrets: bool = False) -> dict[str, Any]:
        """The settings as JSON-able values, for the run reference.

        ``RunConfig.model_validate(pinned(secrets=True))`` rebuilds this configuration exactly, in
        any process. Without ``secrets`` the secret storage options and ``spark_remote``'s token are
        left out: a reference that reaches XCom, a log or a command line carries none, and the
        process that reads it takes them from its own environment (:meth:`with_storage_options`)
        or its Airflow connection (``spark_conn_id``).
        """
        pinned = self.model_dump(mode="json", exclude=set(OUTPUT_SETTINGS), exclude_none=True)
        if self.storage_options and not secrets:
            pinned["storage_options"] = {k: v for k, v in self.storage_options.items() if not is_secret_option(k)}
        if self.spark_remote and not secrets:
            pinned["spark_remote"] = remote_without_token(self.spark_remote)
        return pinned

    def with_storage_options(self, options: Mapping[str, str] | None) -> RunConfig:
        """This configuration with ``options`` added to its storage options (the given ones win)."""
        if not options:
            return self
        return RunConfig.model_validate(
            {**self.pinned(secrets=True), "storage_options": {**(self.storage_options or {}), **options}}
        )

    def loggable(self) -> dict[str, str]:
        """The configuration as flat strings, URIs scrubbed, for logs and MLflow params."""
        out = {}
        for name, value in self.model_dump(by_alias=False).items():
            if value is None:
                continue
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in loggable_options(value).items())
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            out[name] = scrub_uri(text) if name in ("mlflow_uri", "spark_remote") else text
        out["mlflow_uri"] = scrub_uri(self.tracking_uri)
        out["model_name"] = self.registered_model_name
        return out


@dataclass(frozen=True)
class Setting:
    """One run setting as a front end shows it, derived from a :class:`RunConfig` field.

    Attributes:
        name: the field name: the YAML key, the DAG param, ``ECOVAL_<NAME>``.
        flag: the command-line flag (``--kebab-case``).
        kind: ``str``, ``int``, ``float`` or ``bool``.
        choices: the allowed values of a ``Literal`` field, else None.
        default: the field's default (None where it is derived or required).
        help: the field's description, with its default.
        required: no default: the run cannot start without it.
    """

    name: str
    flag: str
    kind: type
    choices: tuple[str, ...] | None
    default: Any
    help: str
    required: bool


def _kind(annotation: Any) -> tuple[type, tuple[str, ...] | None]:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return str, tuple(str(a) for a in get_args(annotation))
    if annotation in (bool, int, float):
        return annotation, None
    return str, None


def settings() -> Iterator[Setting]:
    """Every run setting, in the order of :class:`RunConfig`'s fields."""
    for name, field in RunConfig.model_fields.items():
        kind, choices = _kind(field.annotation)
        required = field.is_required()
        default = None if required else field.default
        help_text = field.description or name
        if default is not None and kind is not bool:
            help_text += f" (default {default})"
        yield Setting(
            name=name,
            flag="--" + (field.alias or name).replace("_", "-"),
            kind=kind,
            choices=choices,
            default=default,
            help=help_text,
            required=required,
        )


def _given(value: Any) -> bool:
    return value is not None and value != ""


def resolve_settings(layers: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """For each setting, the value of the first layer that gives it (None and ``""`` do not).

    Args:
        layers: mappings of setting name to value, highest priority first (for a DAG run:
            the run's params, the Airflow Variables, the environment).
        names: the settings to resolve; default every one of :func:`settings`.

    Returns:
        The settings some layer gives; the others take :class:`RunConfig`'s default.
    """
    out: dict[str, Any] = {}
    for name in names if names is not None else [s.name for s in settings()]:
        for layer in layers:
            value = layer.get(name)
            if _given(value):
                out[name] = value
                break
    return out


def load_config(path: str | Path | None = None, **flags: Any) -> RunConfig:
    """Build a :class:`RunConfig` from a YAML file and flags; flags given (not None or ``""``) win.

    Raises:
        InvalidInputError: unreadable YAML, unknown keys or invalid values, one line each.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InvalidInputError(f"cannot read config {path}: {e}") from e
        if not isinstance(loaded, dict):
            raise InvalidInputError(f"config {path} must be a mapping of flag names to values")
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in flags.items() if _given(v)})
    try:
        return RunConfig.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise InvalidInputError(f"invalid configuration: {problems}") from e
