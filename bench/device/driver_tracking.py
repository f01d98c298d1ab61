"""Driving-video tracking on the GPU host: the real-time mode frame by frame (how reenactment tracked
drivers before) against the whole clip at once (``Tracker.track_landmarks``, now), in time and in
landmark error; and the CUDA-graph landmark stage against the CPU's step-by-step loop.

    python bench/device/driver_tracking.py --driver .carry/clips/drive_lp_d19_man_glasses.mp4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuavatar.animate.reenact import driver_preprocessor
from neuavatar.dataset import Dataset
from neuavatar.head import load_openhead
from neuavatar.render import project
from neuavatar.render.camera import model_to_camera
from neuavatar.track import Tracker, TrackerOptions
from neuavatar.track.tracker import REFERENCE_SIZE, landmarks_with_offsets


def realtime(head, ds: Dataset, device: torch.device) -> tuple[float, float]:
    """Seconds and mean landmark error (px at 512²) of the real-time mode over every frame."""
    tracker = Tracker(head, TrackerOptions(device=device.type), device)
    src = ds.meta["source"]
    scale = float(np.median(ds.crop_to_source[:, 0, 0]))
    session = tracker.realtime(ds.size, TrackerOptions.focal_init * max(src["width"], src["height"]) / scale)
    landmarks = torch.from_numpy(np.nan_to_num(ds.landmarks)).float()
    started = time.perf_counter()
    errors = []
    for i in range(ds.num_frames):
        p = session.track_frame(landmarks[i], i)
        points = landmarks_with_offsets(head, p, None, tracker._landmark_ids)
        uv = project(model_to_camera(points), session.intrinsics)[0].cpu()
        errors.append(float(torch.linalg.norm(uv - landmarks[i, :, :2], dim=-1).mean()) * REFERENCE_SIZE / ds.size)
    return time.perf_counter() - started, float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path, default=Path("bench/out/driver_tracking.json"))
    args = parser.parse_args()
    cuda = torch.device("cuda")
    head = load_openhead()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from neuavatar.preprocess import Preprocessor
        from neuavatar.preprocess.models import import_mediapipe

        import_mediapipe()  # once per process: not part of any row
        for threads in (2, 4, 8):
            started = time.perf_counter()
            config = dataclasses.replace(driver_preprocessor(args.size, True).config, workers=threads)
            with Preprocessor(config) as pre:
                ds = Dataset(pre.process(args.driver, Path(tmp) / f"driver{threads}").dataset_dir)
            rows.append({"what": f"preprocess ({threads} threads, models loaded)", "seconds": time.perf_counter() - started})
        realtime(head, ds, cuda)  # the first session captures its graph and warms CUDA up
        seconds, error = realtime(head, ds, cuda)
        rows.append({"what": "real-time mode, frame by frame", "seconds": seconds, "error_px": error})
        for steps in (300, 150):
            tracker = Tracker(head, TrackerOptions(device="cuda"), cuda)
            for _ in range(2):  # the second run is the one timed
                torch.cuda.synchronize()
                started = time.perf_counter()
                result = tracker.track_landmarks(ds, steps=steps)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - started
            rows.append({"what": f"whole clip at once, {steps} steps (CUDA graphs)", "seconds": seconds,
                         "error_px": result.metrics["landmark_error_px"]})
        states = [Tracker(head, TrackerOptions(device=d), torch.device(d)).track_landmarks(ds, steps=45).state
                  for d in ("cuda", "cpu")]
        gap = max(float((getattr(states[0], k).detach().cpu() - getattr(states[1], k).detach()).abs().max())
                  for k in ("expression", "jaw", "rotation", "translation"))
    report = {"benchmark": "driver_tracking", "device": torch.cuda.get_device_name(), "driver": args.driver.name,
              "frames": ds.num_frames, "size": args.size, "rows": rows, "cuda_graphs_vs_cpu_max_diff": gap}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ndriver tracking, {args.driver.name} ({ds.num_frames} frames, {args.size}²) on {report['device']}")
    for r in rows:
        error = f"{r['error_px']:6.2f} px" if "error_px" in r else ""
        print(f"  {r['what']:<48} {r['seconds']:6.2f} s  {error}")
    print(f"  CUDA graphs against the CPU loop (45 steps): largest parameter difference {gap:.2e}")


if __name__ == "__main__":
    main()
