"""Benchmark of the preprocess stage: frames per second and peak memory on a 512x512 clip.

Each configuration runs in a fresh child process, so its peak memory is its own. The clip is the
bundled sample (made at the requested length, so the benchmark runs anywhere) unless --video is
given. Prints one table; writes the numbers as JSON.

    python bench/preprocess.py                          # this machine: workers 1 and all cores
    python bench/preprocess.py --workers 1 4 8 16       # e.g. on the 16-core GPU host
    python bench/preprocess.py --video ../shared/data/videos/train_mimictalk_german_anchor_20s.mp4

Goals (issue 2): >= 25 frames/s on 2 cores, >= 150 frames/s on the 16-core GPU host.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(video: Path, workers: int, size: int, max_frames: int) -> dict:
    """Run preprocess once in this process; report times and peak memory."""
    from neuavatar import PreprocessConfig, preprocess_video

    marks: dict[str, float] = {}

    def progress(step: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        marks.setdefault(f"{step}_start", now)
        if done and f"{step}_first" not in marks:
            marks[f"{step}_first"] = now  # the first frame finished: workers are up
        marks[f"{step}_end"] = now

    with tempfile.TemporaryDirectory() as tmp:
        cfg = PreprocessConfig(size=size, workers=workers, max_frames=max_frames)
        start = time.perf_counter()
        result = preprocess_video(video, Path(tmp) / "ds", cfg, progress=progress)
        total = time.perf_counter() - start
    n = result.summary["num_frames"]
    return {
        "frames": n,
        "workers": workers,
        "size": size,
        "seconds": total,
        "fps_end_to_end": n / total,
        "seconds_to_first_frame": marks["detect_first"] - start,
        "seconds_detect_pass": marks["detect_end"] - marks["detect_start"],
        "seconds_annotate_pass": marks["annotate_end"] - marks["annotate_start"],
        "fps_annotate_pass": n / (marks["annotate_end"] - marks["annotate_start"]),
        "peak_rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_largest_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a 512x512 clip; default: the bundled sample")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the generated sample")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to try (default: 1 and all cores)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, nargs="+", default=[0],
                        help="frame limits to try (0 = all); two values show memory against length")
    parser.add_argument("--json", type=Path, default=Path("bench/out/preprocess.json"))
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        video, workers, size, frames = args.one
        print(json.dumps(_one(Path(video), int(workers), int(size), int(frames))))
        return

    cores = os.cpu_count() or 1
    workers = args.workers or sorted({1, cores})
    video = args.video
    if video is None:
        from neuavatar.sample import make_sample

        video = Path(tempfile.gettempdir()) / f"neuavatar_bench_sample_{args.seconds:g}s.mp4"
        if not video.exists():
            make_sample(video, seconds=args.seconds)
    rows = []
    for frames in args.frames:
        for w in workers:
            out = subprocess.run([sys.executable, __file__, "--one", str(video), str(w), str(args.size), str(frames)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"benchmark run failed (workers={w}):\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    report = {
        "benchmark": "preprocess",
        "video": str(video),
        "machine": {"cpu_count": cores, "platform": platform.platform(), "processor": _cpu_name(),
                    "python": platform.python_version()},
        "goal_fps": {"2 cores": 25, "16-core GPU host": 150},
        "runs": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\npreprocess benchmark: {video.name}, {cores} cores ({_cpu_name()})")
    head = (f"{'frames':>6} {'workers':>7} {'size':>5} {'seconds':>8} {'fps':>7} {'startup s':>9} {'detect s':>8} "
            f"{'annotate s':>10} {'annotate fps':>12} {'parent MB':>9} {'worker MB':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['frames']:>6} {r['workers']:>7} {r['size']:>5} {r['seconds']:>8.1f} {r['fps_end_to_end']:>7.1f} "
              f"{r['seconds_to_first_frame']:>9.2f} {r['seconds_detect_pass']:>8.2f} {r['seconds_annotate_pass']:>10.2f} "
              f"{r['fps_annotate_pass']:>12.1f} {r['peak_rss_parent_mb']:>9.0f} {r['peak_rss_largest_worker_mb']:>9.0f}")
    print(f"(json: {args.json})")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
