"""What-if before a quarantine: drop the lowest-valued rows (or the suspects) and count the cost.

For each cut, the rows it removes, the wrong labels expected among them and the validation
accuracy of the model retrained without them (the review's removal curve). A row's chance of
carrying a wrong label is what its label vote gives the other labels:

``P(wrong_i) = 1 - agree_i = (1 - alpha_i) / 2``

read from ``ecoval_intrinsic`` (alpha), which every valued row has; ``ecoval_label_confidence``,
the supported label's score, is only kept for suspect rows. The calibration of this estimate
against injected flips, per cut and protocol, is in ``BENCHMARKS.md`` ("Quarantine preview").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ecoval_ops.valuation.removal import RemovalCurve

__all__ = ["NO_CUT", "PREVIEW_PERCENTS", "SUSPECT_CUT", "Cut", "cuts", "preview", "wrong_label_chance"]

PREVIEW_PERCENTS: tuple[int, ...] = (1, 2, 5, 10, 20, 30)
"""The value percentiles a preview cuts at (the lowest-valued ``percent`` of the rows)."""
SUSPECT_CUT = "suspect"
"""The name of the cut that removes the rows flagged ``ecoval_suspect``."""
NO_CUT = "none"
"""The name of the baseline that removes nothing (its accuracy is the model's with every row)."""


def wrong_label_chance(intrinsic: NDArray[np.float64]) -> NDArray[np.float64]:
    """``P(wrong_i) = 1 - agree_i = (1 - alpha_i) / 2``: the vote's share for labels other than the row's."""
    return np.clip((1.0 - np.asarray(intrinsic, dtype=np.float64)) / 2.0, 0.0, 1.0)


@dataclass(frozen=True)
class Cut:
    """One line of a preview.

    Attributes:
        cut: :data:`NO_CUT`, ``"<percent>%"`` or :data:`SUSPECT_CUT`.
        percent: share of the rows removed, in percent.
        rows_removed: rows the cut removes.
        expected_wrong_labels: the sum of :func:`wrong_label_chance` over them.
        validation_accuracy: validation accuracy retrained without the cut's share of the
            lowest-valued training rows (or without the suspects); None where no removal curve
            was computed (an incremental run trains nothing).
    """

    cut: str
    percent: float
    rows_removed: int
    expected_wrong_labels: float
    validation_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``preview`` items of ``ecoval report --preview --json``)."""
        return asdict(self)

    def line(self) -> str:
        """The cut in one line of text."""
        accuracy = "n/a" if self.validation_accuracy is None else f"{self.validation_accuracy:.3f}"
        if self.cut == NO_CUT:
            return f"no cut: validation accuracy with every row {accuracy}"
        share = self.expected_wrong_labels / self.rows_removed if self.rows_removed else 0.0
        name = f"lowest {self.cut}" if self.cut != SUSPECT_CUT else f"suspects ({self.percent:.1f}%)"
        return (
            f"{name}: {self.rows_removed} rows, about {self.expected_wrong_labels:.0f} wrong labels among them "
            f"({share:.0%}); validation accuracy after removal {accuracy}"
        )


def preview(
    values: NDArray[np.float64],
    intrinsic: NDArray[np.float64],
    suspect: NDArray[np.bool_],
    curve: RemovalCurve | None = None,
    percents: tuple[int, ...] = PREVIEW_PERCENTS,
) -> list[Cut]:
    """The preview of rows held in memory: :func:`cuts` with the exact lowest-valued rows.

    Args:
        values: ``(n,)`` row values (``ecoval_value``); ties keep row order.
        intrinsic: ``(n,)`` alpha (``ecoval_intrinsic``).
        suspect: ``(n,)`` the suspect flags.
        curve: the removal curve whose ``bottom`` gives each cut's validation accuracy.
        percents: the cuts, in percent of the rows. Default :data:`PREVIEW_PERCENTS`.
    """
    chance = wrong_label_chance(intrinsic)
    ranked = np.concatenate([[0.0], np.cumsum(chance[np.argsort(values, kind="stable")])])
    flagged = np.asarray(suspect, dtype=bool)
    return cuts(
        values.size, lambda k: float(ranked[k]), int(flagged.sum()), float(chance[flagged].sum()), curve, percents
    )


def cuts(
    n: int,
    lowest: Callable[[int], float],
    suspects: int,
    suspect_chance: float,
    curve: RemovalCurve | None = None,
    percents: tuple[int, ...] = PREVIEW_PERCENTS,
) -> list[Cut]:
    """The baseline (:data:`NO_CUT`), the cuts at ``percents`` of the lowest values, then the suspect cut.

    Args:
        n: rows valued.
        lowest: the expected wrong labels among the ``k`` lowest-valued rows, given ``k``.
        suspects: rows flagged ``ecoval_suspect``.
        suspect_chance: the expected wrong labels among them.
        curve: the removal curve whose ``bottom`` gives each cut's validation accuracy.
        percents: the cuts, in percent of the rows. Default :data:`PREVIEW_PERCENTS`.
    """
    found = [Cut(NO_CUT, 0.0, 0, 0.0, curve.full if curve is not None else None)]
    for percent in percents:
        k = round(percent / 100 * n)
        accuracy = curve.without_lowest(percent / 100) if curve is not None else None
        found.append(Cut(f"{percent}%", float(percent), k, lowest(k), accuracy))
    share = 100.0 * suspects / n if n else 0.0
    accuracy = curve.without_suspects if curve is not None else None
    found.append(Cut(SUSPECT_CUT, share, suspects, suspect_chance, accuracy))
    return found
