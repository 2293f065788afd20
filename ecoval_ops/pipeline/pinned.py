"""One run's configuration and the versions it reads, fixed once (architecture.md, step 1).

``detect`` resolves the configuration and pins the source and validation versions and the
embedder's fingerprint into a :class:`PinnedRun`; it travels inside the run reference
(:class:`~ecoval_ops.pipeline.steps.RunRef`, Airflow's XCom), so every later step, task, shard,
retry and ``spark_jobs/`` entry point runs with exactly what the run was planned with, whatever
Variables, environment or tables have changed since. The embedder, the workspace and the
tracker are built at most once per process from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ecoval_ops.config import RunConfig
from ecoval_ops.lakehouse.embedders import Embedder, FeaturesEmbedder, TorchvisionEmbedder
from ecoval_ops.lakehouse.source import Rows, RowSource, SourceColumns, read_rows, valued_keys
from ecoval_ops.pipeline.workspace import Workspace
from ecoval_ops.storage import TableRef

if TYPE_CHECKING:
    import pyarrow as pa

    from ecoval_ops.tracking import ValuationTracker
    from ecoval_ops.valuation import EcoVal
    from ecoval_ops.valuation.protocols import Clusterer

__all__ = ["PinnedRun", "embedder_for", "source_columns"]


def embedder_for(cfg: RunConfig) -> Embedder | None:
    """The embedder of a run; None when the table holds embeddings (``embedding_col``)."""
    if cfg.source.features is not None:
        return FeaturesEmbedder(cfg.source.features)
    if cfg.source.image_col is not None and cfg.source.embedder is not None and cfg.source.weights is not None:
        return TorchvisionEmbedder(cfg.source.embedder.split(":", 1)[1], cfg.source.weights, cfg.source.image_col)
    return None


def source_columns(cfg: RunConfig) -> SourceColumns:
    """The columns a run of ``cfg`` reads from the source (and validation) table."""
    return SourceColumns(
        cfg.source.key, cfg.source.label, cfg.source.features, cfg.source.embedding_col, cfg.source.image_col
    )


@dataclass(frozen=True)
class PinnedRun:
    """What a run reads, fixed at ``detect``.

    Attributes:
        config: the resolved configuration.
        table_version: the source version the run values.
        validation_version: the validation table's version (None without one).
        embedder_fingerprint: the embedder's fingerprint (None when the table holds
            embeddings); computed once, since a torchvision fingerprint hashes the weights.
        values_version: the values table's version (None without one, or before its first run).
    """

    config: RunConfig
    table_version: int
    validation_version: int | None = None
    embedder_fingerprint: str | None = None
    values_version: int | None = None

    @classmethod
    def pin(
        cls,
        config: RunConfig,
        table_version: int,
        validation_version: int | None = None,
        values_version: int | None = None,
    ) -> PinnedRun:
        """Pin ``config`` with the versions read; the embedder's fingerprint is computed here."""
        embedder = embedder_for(config)
        fingerprint = embedder.fingerprint() if embedder else None
        return cls(config, table_version, validation_version, fingerprint, values_version)

    @cached_property
    def valued(self) -> pa.Array | None:
        """The keys the values table held when the run was pinned (read once); None without one."""
        if self.config.source.values_table is None:
            return None
        return valued_keys(self.config.source.values_table, self.values_version, self.config.source.key)

    @cached_property
    def embedder(self) -> Embedder | None:
        """The run's embedder, built once."""
        return embedder_for(self.config)

    @cached_property
    def workspace(self) -> Workspace:
        """The run's workspace."""
        return Workspace.for_config(self.config)

    @cached_property
    def tracker(self) -> ValuationTracker:
        """The MLflow tracker of the run's store and experiment."""
        from ecoval_ops.tracking import ValuationTracker

        return ValuationTracker(self.config.tracking_uri, self.config.tracking.experiment)

    @property
    def columns(self) -> SourceColumns:
        """The columns the run reads from the source (and validation) table."""
        return source_columns(self.config)

    def embeddings_table(self, *, validation: bool = False) -> TableRef | None:
        """The embeddings table of the run's embedder; None when the table holds embeddings."""
        if self.embedder_fingerprint is None:
            return None
        return self.workspace.embeddings(self.embedder_fingerprint, validation=validation)

    def rows(self, *, only_new: bool = False) -> Rows:
        """The pinned source version's rows (those no run valued, with ``only_new``), read in-process."""
        return read_rows(
            self.columns,
            self.config.source.table,
            embeddings=self.embeddings_table(),
            version=self.table_version,
            only_new=only_new,
            valued=self.valued,
        )

    @cached_property
    def row_source(self) -> RowSource:
        """Where the run's rows lie and how they are split, as the engines' row passes read them."""
        cfg = self.config
        return RowSource(
            columns=self.columns,
            table=cfg.source.table,
            version=self.table_version,
            embeddings=self.embeddings_table(),
            values_table=cfg.source.values_table,
            values_version=self.values_version,
            validation_fraction=cfg.source.validation_fraction if cfg.source.validation_table is None else None,
            seed=cfg.method.seed,
        )

    @cached_property
    def validation_source(self) -> RowSource | None:
        """Where the validation table's rows lie, as the engines read them; None without one."""
        cfg = self.config
        if cfg.source.validation_table is None or self.validation_version is None:
            return None
        return RowSource(
            columns=self.columns,
            table=cfg.source.validation_table,
            version=self.validation_version,
            embeddings=self.embeddings_table(validation=True),
            values_table=None,
            values_version=None,
            validation_fraction=None,
            seed=cfg.method.seed,
        )

    def validation_rows(self) -> Rows | None:
        """The pinned version of the validation table; None when rows of the source are held out."""
        if self.config.source.validation_table is None:
            return None
        return read_rows(
            self.columns,
            self.config.source.validation_table,
            embeddings=self.embeddings_table(validation=True),
            version=self.validation_version,
        )

    def estimator(self, clusterer: Clusterer | None = None) -> EcoVal:
        """An unfitted EcoVal with the run's settings."""
        from ecoval_ops.valuation import EcoVal

        return EcoVal(**self.config.method.model_dump(), clusterer=clusterer)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """The pinned run as JSON-able values (XCom, ``spark_jobs --ref``).

        Secret storage options only with ``secrets``: a spawned child's pipe, never XCom or a
        command line.
        """
        return {
            "config": self.config.pinned(secrets=secrets),
            "table_version": self.table_version,
            "validation_version": self.validation_version,
            "embedder_fingerprint": self.embedder_fingerprint,
            "values_version": self.values_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PinnedRun:
        """Inverse of :meth:`to_dict`."""
        return cls(
            RunConfig.model_validate(data["config"]),
            int(data["table_version"]),
            None if data.get("validation_version") is None else int(data["validation_version"]),
            data.get("embedder_fingerprint"),
            None if data.get("values_version") is None else int(data["values_version"]),
        )
