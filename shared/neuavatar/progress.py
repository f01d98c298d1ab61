"""Progress reporting that works for a terminal and for a service alike.

Long library calls take a ``progress`` callback, ``progress(step, done, total)``: ``step`` names the
phase ("detect", "annotate", ...), ``done`` counts units (frames, iterations) and ``total`` is
their number when known; an optional ``info`` dict carries live figures (loss, PSNR) to show
beside the count. The CLI passes :class:`TqdmProgress`; the services will turn the same
calls into job events.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "TqdmProgress", "no_progress"]


class Progress(Protocol):
    def __call__(self, step: str, done: int, total: int | None, info: dict | None = None) -> None: ...


def no_progress(step: str, done: int, total: int | None, info: dict | None = None) -> None:
    """A progress callback that ignores everything."""


class TqdmProgress:
    """One tqdm bar per step, on stderr."""

    def __init__(self, units: dict[str, str] | None = None):
        """``units``: the unit each step counts in (default "frame"; the tracker counts "step")."""
        self._bars: dict[str, object] = {}
        self._units = {"track": "step", "geometry": "step", "appearance": "step", "joint": "step", **(units or {})}

    def __call__(self, step: str, done: int, total: int | None, info: dict | None = None) -> None:
        from tqdm import tqdm

        bar = self._bars.get(step)
        if bar is None:
            for other in self._bars.values():  # a new step finishes the previous bars
                other.close()
            bar = self._bars[step] = tqdm(total=total, desc=f"{step:>9}", unit=self._units.get(step, "frame"),
                                          dynamic_ncols=True, leave=True)
        if total is not None and bar.total != total:
            bar.total = total
        if info:
            bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in info.items()}, refresh=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
