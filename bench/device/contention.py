"""Why do 16 preprocess workers give only ~6x one worker? Time the MediaPipe steps in K processes at
once, each free to run anywhere or pinned to one core (with MediaPipe's threads pinned with it).

    python bench/device/contention.py --procs 1 8 16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path


def _work(args) -> float:
    video, pin, core, n = args
    if pin:
        os.sched_setaffinity(0, {core})
    from neuavatar.preprocess.worker import init_worker
    init_worker(True)
    from neuavatar.preprocess.models import FaceLandmarker, PersonSegmenter
    from neuavatar.video import read_frames

    frames = [f.rgb for f in read_frames(video, max_frames=n)]
    mesh, seg = FaceLandmarker(1), PersonSegmenter()
    for f in frames[:5]:
        mesh.landmarks(f), seg.mask(f)
    t = time.perf_counter()
    for f in frames:
        mesh.landmarks(f)
        seg.mask(f)
    return 1000 * (time.perf_counter() - t) / len(frames)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("video", type=Path)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--frames", type=int, default=150)
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    print(f"{'procs':>5} {'pinned':>6} {'ms/frame (mesh+seg) per process':>32} {'frames/s total':>14}")
    for k in a.procs:
        for pin in (False, True):
            with ctx.Pool(k) as pool:
                ms = pool.map(_work, [(a.video, pin, i % os.cpu_count(), a.frames) for i in range(k)])
            mean = sum(ms) / len(ms)
            print(f"{k:>5} {str(pin):>6} {mean:>32.2f} {k * 1000 / mean:>14.1f}")


if __name__ == "__main__":
    main()
