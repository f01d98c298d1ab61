"""What the two parity scripts (render_parity.py, gaussian_parity.py) share: gradient comparison,
JSON-safe reports and forward / forward + backward timing."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["grad_stats", "finite", "time_forward_backward", "finish"]


def grad_stats(mine: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Cosine similarity and relative error of a gradient against the reference (float64)."""
    mine, ref = mine.flatten().double(), ref.flatten().double()
    cos = torch.nn.functional.cosine_similarity(mine, ref, dim=0).item() if ref.norm() > 0 else float("nan")
    rel = ((mine - ref).norm() / ref.norm().clamp(min=1e-30)).item()
    return cos, rel


def finite(value):
    """The report with NaN (an all-zero reference gradient) as null, so the JSON stays standard."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def time_forward_backward(run: Callable[[bool], torch.Tensor], cuda: bool, repeats: int) -> dict:
    """Median milliseconds of ``run(False)`` (forward) and of ``run(True)`` then backward of its
    (scalar) result; ``run(backward)`` makes fresh leaves that require grad when ``backward``."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def once(backward: bool) -> float:
        sync()
        start = time.perf_counter()
        out = run(backward)
        if backward:
            out.backward()
        sync()
        return 1000 * (time.perf_counter() - start)

    for _ in range(3):  # warm-up (allocator, kernels, contexts)
        once(True)
    return {"forward_ms": statistics.median(once(False) for _ in range(repeats)),
            "forward_backward_ms": statistics.median(once(True) for _ in range(repeats))}


def finish(report: dict, json_path: Path | None) -> int:
    """Mark ``report`` passed or not, write it as JSON where asked, and return the exit status
    (1 when a comparison fell outside its tolerances)."""
    failed = [r for r in report["parity"] if r["failures"]]
    report["pass"] = not failed
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(finite(report), indent=2))
    if failed:
        print(f"\n{len(failed)} comparisons outside the tolerances", file=sys.stderr)
        return 1
    return 0
