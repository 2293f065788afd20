"""What the steps of a run hand each other: references, never data (architecture.md).

:class:`Detection` leaves ``detect`` with the :class:`~ecoval_ops.pipeline.pinned.PinnedRun`;
:class:`RunRef` carries it on through every later step, with the mode, the parent MLflow run
and the model version. Both are JSON-able, for Airflow's XCom and ``spark_jobs --ref``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecoval_ops.exceptions import EcovalError
from ecoval_ops.pipeline.pinned import PinnedRun
from ecoval_ops.pipeline.refit import Mode

__all__ = ["Detection", "RunRef"]


@dataclass(frozen=True)
class RunRef:
    """What a step hands the next: references only, JSON-able (Airflow XCom).

    Attributes:
        run: the pinned configuration and versions.
        mode: ``refit``, ``incremental`` or ``noop``.
        run_id: the parent MLflow run (None for a no-op).
        model_version: the registered valuation model the values come from.
    """

    run: PinnedRun
    mode: Mode
    run_id: str | None = None
    model_version: str | None = None

    @property
    def table_version(self) -> int:
        """The source version the run values."""
        return self.run.table_version

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """The reference as a plain dict (secret storage options only with ``secrets``)."""
        return {
            "run": self.run.to_dict(secrets=secrets),
            "mode": self.mode,
            "run_id": self.run_id,
            "model_version": self.model_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRef:
        """Inverse of :meth:`to_dict`."""
        return cls(PinnedRun.from_dict(data["run"]), data["mode"], data.get("run_id"), data.get("model_version"))

    def started(self) -> str:
        """The run id, for steps that need an open run."""
        if self.run_id is None:
            raise EcovalError(f"a {self.mode} run has no MLflow run; decide() opens one for refit and incremental runs")
        return self.run_id


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found.

    Attributes:
        run: the pinned configuration and versions.
        rows: rows in the pinned source version.
        new_rows: rows no run has valued yet.
    """

    run: PinnedRun
    rows: int
    new_rows: int

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict (XCom)."""
        return {"run": self.run.to_dict(), "rows": self.rows, "new_rows": self.new_rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Detection:
        """Inverse of :meth:`to_dict`."""
        return cls(PinnedRun.from_dict(data["run"]), int(data["rows"]), int(data["new_rows"]))
