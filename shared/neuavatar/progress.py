"""Progress reporting that works for a terminal and for a service alike.

Long library calls take a ``progress`` callback, ``progress(step, done, total)``: ``step`` names the
phase ("detect", "annotate", ...), ``done`` counts units (frames, iterations) and ``total`` is
their number when known. The CLI passes :class:`TqdmProgress`; the services will turn the same
calls into job events.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "TqdmProgress", "no_progress"]


class Progress(Protocol):
    def __call__(self, step: str, done: int, total: int | None) -> None: ...


def no_progress(step: str, done: int, total: int | None) -> None:
    """A progress callback that ignores everything."""


class TqdmProgress:
    """One tqdm bar per step, on stderr."""

    def __init__(self, unit: str = "frame"):
        self._bars: dict[str, object] = {}
        self._unit = unit

    def __call__(self, step: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        bar = self._bars.get(step)
        if bar is None:
            for other in self._bars.values():  # a new step finishes the previous bars
                other.close()
            bar = self._bars[step] = tqdm(total=total, desc=f"{step:>9}", unit=self._unit, dynamic_ncols=True,
                                          leave=True)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
