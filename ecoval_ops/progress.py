"""Progress of a run's stages for a person at a terminal; silent for everyone else.

``run_valuation`` reports each stage through a :class:`Progress`; the CLI passes one that draws
rich progress bars on stderr when stderr is a terminal (stdout stays free for ``--json``); tests
and the DAG pass none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import rich.progress

__all__ = ["Progress"]


class Progress:
    """Stage bars: ``with progress.stage("trainings", total) as advance: ... advance(n)``.

    Args:
        enabled: draw bars (on stderr); when False every call is a no-op.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: rich.progress.Progress | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars

            self._bars = Bars(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        """A bar of ``total`` units for one stage; yields ``advance(units)``; completes on exit."""
        bars = self._bars
        if bars is None:
            yield lambda units: None
            return
        task = bars.add_task(name, total=max(total, 1))
        yield lambda units: bars.advance(task, units)
        bars.update(task, completed=max(total, 1))
