"""From a library call's ``progress(step, done, total, info)`` to job events, the job record and metrics.

A stage's library call reports steps (``detect``, ``annotate``; ``track``; ``load``, ``geometry``,
``appearance``, ``joint``, ``evaluate``); a :class:`StepPlan` maps each to a span of the stage's
0-100 %, and :class:`JobReporter` turns the calls into a ``progress`` event (and a ``metrics`` event
when live figures come along) and a record update, at most once per interval. Events are best
effort (the record is the source of truth); a record update that finds the job deleted raises
:class:`~neuavatar.services.jobs.JobCancelled` out of the library call, which stops the work. When
the service is stopping, every report (throttled or not) raises
:class:`~neuavatar.messaging.JobInterrupted` the same way, so the library call ends at its next
report instead of running to its end.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from neuavatar.messaging import JobInterrupted
from neuavatar.services import metrics
from neuavatar.services.jobs import overall_percent

__all__ = ["StepPlan", "JobReporter", "preprocess_plan", "track_plan", "train_plan"]

log = logging.getLogger("neuavatar.services")


@dataclass(frozen=True)
class StepPlan:
    """The span ``(start, end)`` of the stage's percent that each named step covers."""

    spans: Mapping[str, tuple[float, float]]

    def percent(self, step: str, done: int, total: int | None) -> float | None:
        """The stage's percent at ``done`` of ``total`` in ``step``; None for a step not in the plan."""
        span = self.spans.get(step)
        if span is None:
            return None
        fraction = min(1.0, max(0.0, done / total)) if total else 0.0
        return span[0] + (span[1] - span[0]) * fraction


def preprocess_plan() -> StepPlan:
    return StepPlan({"detect": (0.0, 40.0), "annotate": (40.0, 100.0)})


def track_plan() -> StepPlan:
    return StepPlan({"track": (0.0, 95.0), "overlay": (95.0, 100.0)})


def train_plan(steps: tuple[int, ...], stage_names: tuple[str, ...]) -> StepPlan:
    """Loading 0-5 %, the training stages 5-90 % in proportion to their steps, evaluation 90-100 %."""
    spans: dict[str, tuple[float, float]] = {"load": (0.0, 5.0), "evaluate": (90.0, 100.0)}
    total = sum(steps) or 1
    start = 5.0
    for name, n in zip(stage_names, steps):
        end = start + 85.0 * n / total
        spans[name] = (start, end)
        start = end
    return StepPlan(spans)


EmitFn = Callable[..., None]
"""``emit(kind, percent=..., message=..., metrics=...)``: publish one event of the job."""
UpdateFn = Callable[..., object]
"""``update(**changes)``: write changes to the job record (raises JobCancelled when deleted)."""


class JobReporter:
    """The ``progress`` callback of one stage run of one job.

    Args:
        stage: the stage (``preprocess``, ``track``, ``train``).
        plan: how the library's steps map to the stage's percent.
        emit: publishes an event (best effort).
        update: writes the job record.
        interval_seconds: at most one event (and one record write) this often.
        stopping: set when the service stops; the next report raises JobInterrupted.
    """

    def __init__(self, stage: str, plan: StepPlan, emit: EmitFn, update: UpdateFn, interval_seconds: float,
                 stopping: threading.Event | None = None) -> None:
        self.stage, self.plan, self._emit, self._update = stage, plan, emit, update
        self.interval_seconds = interval_seconds
        self._stopping = stopping
        self.percent = 0.0
        self.figures: dict[str, float] = {}
        self._last = -math.inf
        self._lock = threading.Lock()

    def __call__(self, step: str, done: int, total: int | None, info: dict | None = None) -> None:
        if self._stopping is not None and self._stopping.is_set():
            raise JobInterrupted(f"the {self.stage} service is stopping (at {step} {done}/{total})")
        with self._lock:
            percent = self.plan.percent(step, done, total)
            if percent is not None:
                self.percent = max(self.percent, percent)
            figures = {k: float(v) for k, v in (info or {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            if figures:
                self.figures.update(figures)
                if self.stage == "train":
                    if "loss" in figures:
                        metrics.TRAIN_LOSS.set(figures["loss"])
                    if "psnr" in figures:
                        metrics.TRAIN_PSNR.set(figures["psnr"])
            now = time.monotonic()
            if now - self._last < self.interval_seconds:
                return
            self._last = now
            message = f"{step} {done}/{total}" if total else f"{step} {done}"
            percent = round(self.percent, 2)
        self._emit("progress", percent=percent, message=message)
        if figures:
            self._emit("metrics", percent=percent, message=message, metrics=figures)
        self._update(state="running", stage_percent=percent, percent=overall_percent(self.stage, percent),
                     message=f"{self.stage}: {message}", metrics=self.figures)
