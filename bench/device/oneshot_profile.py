"""Where a one-shot `neuavatar reenact` spends its time, in a fresh process on the GPU host: imports,
loading the avatar, the first render (gsplat, graph capture), preprocessing the driver, and each
phase of tracking it (first use of each CUDA library included), then the same reenactment warm.

    python bench/device/oneshot_profile.py AVATAR DRIVER
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

started = time.perf_counter()
rows: list[tuple[str, float]] = []


def lap(what: str) -> None:
    global started
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    now = time.perf_counter()
    rows.append((what, now - started))
    started = now


def main() -> None:
    avatar, driver = Path(sys.argv[1]), Path(sys.argv[2])
    import torch

    lap("import torch")
    from neuavatar.animate import AvatarRenderer
    from neuavatar.animate.reenact import driver_preprocessor, reenact_video
    from neuavatar.dataset import Dataset
    from neuavatar.track import Tracker, TrackerOptions
    from neuavatar.track.tracker import TrackingInputs, TrackState

    lap("import neuavatar")
    renderer = AvatarRenderer(avatar)
    lap("load the avatar (CUDA context, checkpoint)")
    renderer.render(renderer.params(16))
    lap("first render, batch 16 (gsplat, graph capture)")
    with tempfile.TemporaryDirectory() as tmp:
        with driver_preprocessor(renderer.size, in_process=True) as pre:
            ds = Dataset(pre.process(driver, Path(tmp) / "driver").dataset_dir)
        lap("preprocess the driver (threads)")
        tracker = Tracker(renderer.avatar.head, TrackerOptions(), renderer.device)
        inputs = TrackingInputs(ds, tracker.device)
        state = TrackState(tracker.model, inputs.num_frames, 16, tracker.device)
        lap("tracker: inputs and state")
        tracker._rigid_init(state, inputs)
        lap("tracker: rigid initialisation")
        tracker._fit_landmarks(state, inputs, 300, lambda losses: None)
        lap("tracker: 300 landmark steps (first: capture)")
        tracker._fit_landmarks(state, inputs, 300, lambda losses: None)
        lap("tracker: 300 landmark steps again")
        first = reenact_video(renderer, driver, Path(tmp) / "a.mp4", side_by_side=True)
        lap("reenact_video, second in the process")
        second = reenact_video(renderer, driver, Path(tmp) / "b.mp4", side_by_side=True)
        lap("reenact_video, third")
    total = sum(s for _, s in rows)
    print(f"\none-shot reenactment, fresh process, on {torch.cuda.get_device_name()}")
    for what, s in rows:
        print(f"  {what:<52} {s:6.2f} s")
    print(f"  {'total':<52} {total:6.2f} s")
    for name, r in (("second", first), ("third", second)):
        print(f"  reenact_video {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.seconds.items()))


if __name__ == "__main__":
    main()
