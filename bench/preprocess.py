"""Benchmark of the preprocess stage: frames per second and peak memory on a 512x512 clip.

Each configuration runs in a fresh child process, so its peak memory is its own, and processes
the clip twice with one Preprocessor: "cold" includes starting the workers (what one CLI call
pays), "warm" reuses them (what a long-running service pays per video). The clip is the bundled
sample (made at the requested length, so the benchmark runs anywhere) unless --video is given.
Prints one table; writes the numbers as JSON.

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


def _one(video: Path, workers: int, size: int, max_frames: int) -> list[dict]:
    """Preprocess ``video`` twice with one Preprocessor: cold (workers start) and warm (they are up)."""
    from neuavatar import PreprocessConfig, Preprocessor

    rows = []
    cfg = PreprocessConfig(size=size, workers=workers, max_frames=max_frames)
    with tempfile.TemporaryDirectory() as tmp, Preprocessor(cfg) as preprocessor:
        for start_mode in ("cold", "warm"):
            start = time.perf_counter()
            result = preprocessor.process(video, Path(tmp) / start_mode)
            total = time.perf_counter() - start
            n = result.summary["num_frames"]
            timing = result.summary["timing"]
            rows.append({
                "frames": n,
                "workers": preprocessor.workers,
                "start": start_mode,
                "size": size,
                "seconds": total,
                "fps_end_to_end": n / total,
                "seconds_to_first_frame": timing["startup_seconds"],
                "seconds_detect_pass": timing["detect_seconds"],
                "seconds_annotate_pass": timing["annotate_seconds"],
                "fps_annotate_pass": n / timing["annotate_seconds"],
                # worker time per frame in each annotate step (summed over workers): where the CPU goes
                "annotate_ms_per_frame": {k: 1000 * v / n for k, v in timing["annotate_worker_seconds"].items()},
                "annotate_jobs_start_end_decode_seconds": timing["annotate_jobs"],
                "seconds_writing_and_planning": timing["write_seconds"],
            })
    for row in rows:  # peaks over the whole run; children count once they have exited
        row["peak_rss_parent_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["peak_rss_largest_worker_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return rows


def _components(video: Path, size: int, n: int = 100) -> list[dict]:
    """Per-frame cost of each step in one process: wall ms and CPU/wall (above 1: the step uses threads)."""
    import cv2
    import numpy as np

    from neuavatar.preprocess.models import FaceDetector, FaceLandmarker, PersonSegmenter
    from neuavatar.preprocess.segment import refine_alpha, region_masks, semantic_labels
    from neuavatar.video import read_frames

    frames = [cv2.resize(f.rgb, (size, size)) for f in read_frames(video, max_frames=n)]
    mesh, seg, det = FaceLandmarker(1), PersonSegmenter(), FaceDetector("short")
    lmk = [(mesh.landmarks(f) or [None])[0] for f in frames]
    masks = [seg.mask(f) for f in frames]
    ok = [i for i, points in enumerate(lmk) if points is not None]
    steps = {
        "decode 512 (rgb)": (lambda i: None, None),
        "detect (short range)": (lambda i: det.detect(frames[i]), None),
        "face mesh": (lambda i: mesh.landmarks(frames[i]), None),
        "person segmentation": (lambda i: seg.mask(frames[i]), None),
        "refine alpha": (lambda i: refine_alpha(frames[i], masks[i]), None),
        "semantic labels": (lambda i: semantic_labels(frames[i], lmk[i], masks[i], regions=region_masks((size, size), lmk[i])), ok),
        "write jpg": (lambda i: cv2.imwrite("/tmp/_b.jpg", frames[i], [cv2.IMWRITE_JPEG_QUALITY, 95]), None),
        "write 2 png": (lambda i: [cv2.imwrite("/tmp/_b.png", (masks[i] * 255).astype(np.uint8),
                                               [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER,
                                                cv2.IMWRITE_PNG_FILTER_SUB]) for _ in range(2)], None),
    }
    rows = []
    for name, (fn, subset) in steps.items():
        idx = subset if subset is not None else range(len(frames))
        if name.startswith("decode"):
            t, c = time.perf_counter(), time.process_time()
            count = sum(1 for _ in read_frames(video, max_frames=n, threads=1))
        else:
            for i in list(idx)[:3]:
                fn(i)
            t, c = time.perf_counter(), time.process_time()
            count = 0
            for i in idx:
                fn(i)
                count += 1
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        rows.append({"step": name, "ms_per_frame": 1000 * wall / max(count, 1), "cpu_per_wall": cpu / wall})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a 512x512 clip; default: the bundled sample")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the generated sample")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to try (default: 1 and all cores)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, nargs="+", default=[0],
                        help="frame limits to try (0 = all); two values show memory against length")
    parser.add_argument("--json", type=Path, default=Path("bench/out/preprocess.json"))
    parser.add_argument("--components", action="store_true", help="also time each step alone, in one process")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        video, workers, size, frames = args.one
        if workers == "components":
            print(json.dumps(_components(Path(video), int(size), int(frames))))
        else:
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
            rows.extend(json.loads(out.stdout.strip().splitlines()[-1]))

    components = []
    if args.components:
        out = subprocess.run([sys.executable, __file__, "--one", str(video), "components", str(args.size), "100"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"component timing failed:\n{out.stderr[-3000:]}")
        components = json.loads(out.stdout.strip().splitlines()[-1])

    report = {
        "benchmark": "preprocess",
        "video": str(video),
        "machine": {"cpu_count": cores, "platform": platform.platform(), "processor": _cpu_name(),
                    "python": platform.python_version()},
        "goal_fps": {"2 cores": 25, "16-core GPU host": 150},
        "runs": rows,
        "components": components,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\npreprocess benchmark: {video.name}, {cores} cores ({_cpu_name()})")
    head = (f"{'frames':>6} {'workers':>7} {'start':>5} {'size':>5} {'seconds':>8} {'fps':>7} {'startup s':>9} "
            f"{'detect s':>8} {'annotate s':>10} {'annotate fps':>12} {'parent MB':>9} {'worker MB':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['frames']:>6} {r['workers']:>7} {r['start']:>5} {r['size']:>5} {r['seconds']:>8.1f} {r['fps_end_to_end']:>7.1f} "
              f"{r['seconds_to_first_frame']:>9.2f} {r['seconds_detect_pass']:>8.2f} {r['seconds_annotate_pass']:>10.2f} "
              f"{r['fps_annotate_pass']:>12.1f} {r['peak_rss_parent_mb']:>9.0f} {r['peak_rss_largest_worker_mb']:>9.0f}")
    for r in rows:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r["annotate_ms_per_frame"].items())
        print(f"  workers={r['workers']} ({r['start']}): annotate worker ms/frame: {steps}")
        jobs = r["annotate_jobs_start_end_decode_seconds"]
        print(f"    annotate jobs start {min(j[0] for j in jobs):.2f}-{max(j[0] for j in jobs):.2f} s, end "
              f"{min(j[1] for j in jobs):.2f}-{max(j[1] for j in jobs):.2f} s after the detect pass (decoding "
              f"{min(j[2] for j in jobs):.2f}-{max(j[2] for j in jobs):.2f} s per job); planning + writing outside "
              f"the passes {r['seconds_writing_and_planning']:.2f} s")
    for c in components:
        print(f"  {c['step']:<22} {c['ms_per_frame']:7.2f} ms/frame   cpu/wall {c['cpu_per_wall']:.2f}")
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
