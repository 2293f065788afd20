"""The quarantine preview as a reviewer sees it: a table and a plot (MLflow ``review/`` and ``ecoval report``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ecoval_ops.valuation.quarantine import Cut

__all__ = ["preview_frame", "preview_plot"]


def preview_frame(cuts: list[Cut]) -> pd.DataFrame:
    """One row per cut: rows removed, expected wrong labels (and their share), validation accuracy."""
    import pandas as pd

    frame = pd.DataFrame([c.to_dict() for c in cuts])
    frame.insert(4, "expected_wrong_share", frame["expected_wrong_labels"] / frame["rows_removed"].clip(lower=1))
    return frame


def preview_plot(cuts: list[Cut]) -> Figure:
    """Bars: rows each cut removes and the wrong labels expected among them; line: validation accuracy."""
    from ecoval_ops.tracking.review import new_figure

    fig, ax = new_figure()
    names = [c.cut for c in cuts]
    ax.bar(names, [c.rows_removed for c in cuts], color="#c8d6e5", label="rows removed")
    ax.bar(names, [c.expected_wrong_labels for c in cuts], color="#c0392b", label="expected wrong labels")
    ax.set_xlabel("cut (lowest-valued share, or the suspect flag)")
    ax.set_ylabel("rows")
    ax.legend(loc="upper left")
    accuracy = [(c.cut, c.validation_accuracy) for c in cuts if c.validation_accuracy is not None]
    if accuracy:
        right = ax.twinx()
        right.plot([n for n, _ in accuracy], [a for _, a in accuracy], color="black", marker="o")
        right.set_ylabel("validation accuracy after removal")
    ax.set_title("Quarantine preview: what each cut removes")
    fig.tight_layout()
    return fig
