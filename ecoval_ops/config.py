"""The one typed configuration of a valuation run (architecture.md, "Conventions").

Every ``ecoval run`` flag is a field; a YAML file can give any of them and flags win. Paths are
normalised, identifiers pass the allow-list, and :meth:`RunConfig.loggable` drops secrets from
URIs before anything reaches a log or MLflow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse.identifiers import check_identifier

__all__ = ["RunConfig", "default_tracking_uri", "load_config", "scrub_uri"]

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|token|secret|key|sig|signature)=)[^&]*")


def scrub_uri(uri: str) -> str:
    """``uri`` with user info and secret-looking query values replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _CREDENTIALS.sub(r"\g<scheme>***@", uri))


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: the MLflow store when none is named."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class RunConfig(BaseModel):
    """Configuration of one ``ecoval run`` (the CLI flags, snake_case).

    Attributes:
        table: the source Delta table.
        key: row-key column.
        label: label column.
        features: numeric feature columns (the ``features`` embedder).
        embedding_col: a column holding precomputed embedding vectors.
        image_col: a column of image bytes or pixel arrays (with ``embedder`` and ``weights``).
        embedder: ``features`` or ``torchvision:<model>``.
        weights: local path of the torchvision weights.
        validation_table: a separate validation Delta table.
        validation_fraction: share of rows held out by hash of key when there is no validation
            table. Default 0.1.
        refit: ``auto``, ``always`` or ``never``. Default ``auto``.
        mlflow_uri: MLflow tracking URI. Default: ``sqlite:///<cwd>/mlflow.db``.
        experiment: MLflow experiment. Default ``ecoval``.
        model_name: registered valuation model. Default ``ecoval_<table folder name>``.
        clusters: p; default from ``budget``.
        budget: most model trainings. Default 80 (in the engine).
        seed: seed of every random choice. Default 0.
        engine: ``spark`` or ``delta-rs``. Default ``spark``.
        shards: groups of LCO trainings run as separate tasks (Airflow maps one task per
            shard; ``ecoval run`` runs them in turn). Default 1.
        staging_dir: the run workspace (embeddings table, plans, shard results); default
            ``<table parent>/_ecoval/<table name>``.
        quiet: no progress bars.
        json_output: print a machine-readable summary (the ``--json`` flag).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    table: Path
    key: str
    label: str
    features: tuple[str, ...] | None = None
    embedding_col: str | None = None
    image_col: str | None = None
    embedder: str | None = None
    weights: Path | None = None
    validation_table: Path | None = None
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    refit: Literal["auto", "always", "never"] = "auto"
    mlflow_uri: str | None = None
    experiment: str = "ecoval"
    model_name: str | None = None
    clusters: int | None = Field(default=None, ge=2)
    budget: int | None = Field(default=None, ge=5)
    seed: int = 0
    engine: Literal["spark", "delta-rs"] = "spark"
    shards: int = Field(default=1, ge=1)
    staging_dir: Path | None = None
    quiet: bool = False
    json_output: bool = Field(default=False, alias="json")

    @field_validator("table", "validation_table", "weights", "staging_dir")
    @classmethod
    def _normalise(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()

    @field_validator("key", "label", "embedding_col", "image_col", "model_name")
    @classmethod
    def _identifier(cls, value: str | None, info: Any) -> str | None:
        # model_name reaches MLflow's search filters, so it obeys the same allow-list.
        what = info.field_name if info.field_name == "model_name" else f"{info.field_name} column"
        return None if value is None else check_identifier(value, what)

    @field_validator("features", mode="before")
    @classmethod
    def _feature_list(cls, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        if not names or any(not n for n in names):
            raise ValueError("features must be a non-empty comma-separated list of column names")
        return tuple(check_identifier(n, "feature column") for n in names)

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
        return self

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI, defaulting to a SQLite file in the working directory."""
        return self.mlflow_uri or default_tracking_uri()

    @property
    def registered_model_name(self) -> str:
        """The model name, defaulting to ``ecoval_<table folder name>`` made identifier-safe."""
        return self.model_name or "ecoval_" + re.sub(r"[^A-Za-z0-9_]", "_", self.table.name)

    def loggable(self) -> dict[str, str]:
        """The configuration as flat strings, URIs scrubbed, for logs and MLflow params."""
        out = {}
        for name, value in self.model_dump(by_alias=False).items():
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            out[name] = scrub_uri(text) if name == "mlflow_uri" else text
        out["mlflow_uri"] = scrub_uri(self.tracking_uri)
        out["model_name"] = self.registered_model_name
        return out


def load_config(path: str | Path | None = None, **flags: Any) -> RunConfig:
    """Build a :class:`RunConfig` from a YAML file and flags; flags given (not None) win.

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
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return RunConfig.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise InvalidInputError(f"invalid configuration: {problems}") from e
