"""How new are a clip's held-out frames? A model-free answer, before any avatar is trained.

For each held-out frame, the PSNR of the *nearest training frame* (the training target closest to
it in squared error), beside the mean training image's, for the two splits of `bench/train.py`:
the last 15% (the goal's) and every 7th frame. Targets are built as the trainer builds them, but
without tracking: the person's alpha over white, the torso (neck/torso label below the chin) cut.

A clip whose tail is like its first 85% has a nearest training frame within a few dB of the
interleaved split's; a clip whose tail shows the person framed, posed or combed as never before
scores near the mean image: no training frame resembles it.

    neuavatar preprocess CLIP.mp4 --out /tmp/ds/CLIP          # for each clip (about 40 frames/s on 2 cores)
    python bench/heldout_novelty.py /tmp/ds/* --size 256 --json bench/out/heldout_novelty.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from neuavatar.avatar.data import CHIN
from neuavatar.dataset import LABELS, Dataset, make_split
from neuavatar.preprocess import PreprocessConfig


def targets(ds: Dataset, size: int) -> torch.Tensor:
    """(T, size*size*3) the frames' targets in [0, 1]: the person without the torso, over white."""
    frames = ds.resized(size, ("image", "alpha", "labels"))
    image = torch.from_numpy(frames["image"]).float() / 255
    alpha = torch.from_numpy(frames["alpha"]).float()  # already in [0, 1]
    labels = torch.from_numpy(frames["labels"])
    chin = torch.from_numpy(np.nan_to_num(ds.landmarks[:, CHIN, 1]) * size / ds.size).float()
    rows = torch.arange(size, dtype=torch.float32)[None, :, None]
    mask = (alpha * ~((labels == LABELS.index("neck_torso")) & (rows > chin[:, None, None])))[..., None]
    return (image * mask + (1 - mask)).flatten(1)


def novelty(ds: Dataset, size: int) -> dict:
    x = targets(ds, size)
    fraction = PreprocessConfig().val_fraction
    norm = (x * x).sum(1)
    out = {}
    for name in ("tail", "interleaved"):
        split = make_split(ds.valid, fraction, name)
        train, val = torch.tensor(split["train"]), torch.tensor(split["val"])
        # |a - b|² = |a|² + |b|² - 2 a·b, for every (held-out, training) pair at once
        mse = (norm[val, None] + norm[None, train] - 2 * x[val] @ x[train].T) / x.shape[1]
        nearest = mse.clamp_min(1e-10).min(1).values
        mean = (x[val] - x[train].mean(0)).pow(2).mean(1)
        out[name] = {"val_frames": len(val), "nearest_training_frame_psnr": float((-10 * nearest.log10()).mean()),
                     "mean_image_psnr": float((-10 * mean.log10()).mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset directories (neuavatar preprocess)")
    parser.add_argument("--size", type=int, default=256, help="side the targets are compared at")
    parser.add_argument("--json", type=Path, default=Path("bench/out/heldout_novelty.json"))
    args = parser.parse_args()
    rows = {d.name: novelty(Dataset(d), args.size) for d in args.datasets}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"size": args.size, "clips": rows}, indent=1) + "\n")
    print(f"held-out novelty at {args.size}²: PSNR of the nearest training frame and of the mean training image")
    print(f"{'clip':<36} {'split':<12} {'frames':>6} {'nearest':>8} {'mean':>6}")
    for clip, splits in rows.items():
        for split, r in splits.items():
            print(f"{clip[:36]:<36} {split:<12} {r['val_frames']:>6} {r['nearest_training_frame_psnr']:>8.2f} "
                  f"{r['mean_image_psnr']:>6.2f}")
    print(f"(json: {args.json})")


if __name__ == "__main__":
    main()
