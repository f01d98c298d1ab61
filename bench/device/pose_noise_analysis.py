"""Is the tracked rigid pose's error frame-to-frame jitter or a slow drift, and what would smoothing give?

For each trained avatar (a `bench/train.py --work` directory), with the avatar frozen:

- the rigid corrections (`refine_frames`, rotation + translation) of a run of consecutive frames:
  their lag-1 autocorrelation over *consecutive* frames, and the share of their variance that a
  Gaussian smoothing over ±2 frames removes (jitter) against the share it keeps (drift);
- held-out and training PSNR with the tracked rotation and translation smoothed over time
  (Gaussian, sigma in frames), as tracking could deliver it with no retraining;
- on the interleaved split, held-out PSNR with each held-out frame's correction taken as the mean
  of its neighbouring training frames' corrections (no held-out pixels used).

    python bench/device/pose_noise_analysis.py /tmp/trn/CLIP_interleaved/avatar_default --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from heldout_analysis import frame_psnr, lag1, load_trained  # noqa: E402


def smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(T, D) ``x`` smoothed along T by a Gaussian of ``sigma`` frames (edges reflected)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1).repeat(x.shape[1], 1, 1)
    padded = torch.nn.functional.pad(x.T[None], (r, r), mode="reflect")
    return torch.nn.functional.conv1d(padded, k, groups=x.shape[1])[0].T


def analyse(avatar_dir: Path, device: torch.device, window: int, sigmas: list[float]) -> dict:
    from neuavatar.avatar.evaluate import evenly_spaced
    from neuavatar.avatar.refine import refine_frames

    avatar, cfg, data = load_trained(avatar_dir, device)
    val, train = data.val_ids.to(device), data.train_ids.to(device)
    frames = torch.cat([train, val]).sort().values  # every valid frame, in time order
    sample = evenly_spaced(train, 128)
    p = data.params
    steps, lr = cfg["eval_refine_steps"] or 50, cfg["eval_refine_lr"]
    out: dict = {"avatar": str(avatar_dir), "val_frames": len(val)}

    # 1. held-out and training PSNR with the tracked rigid pose smoothed over time
    position = torch.full((len(p.rotation),), -1, dtype=torch.long, device=device)
    position[frames] = torch.arange(len(frames), device=device)
    for sigma in sigmas:
        q = p.clone()
        q.rotation[frames] = smooth(p.rotation[frames], sigma)
        q.translation[frames] = smooth(p.translation[frames], sigma)
        out[f"sigma_{sigma:g}"] = {"psnr_val": float(frame_psnr(avatar, data, val, q[val]).mean()),
                                   "psnr_train": float(frame_psnr(avatar, data, sample, q[sample]).mean())}

    # 2. corrections of a run of consecutive frames: jitter or drift?
    start = max(0, len(frames) // 2 - window // 2)
    run = frames[start:start + window]
    refined, _ = refine_frames(avatar, data, run, ("rotation", "translation"), steps, lr)
    delta = torch.cat([refined.rotation - p.rotation[run], (refined.translation - p.translation[run]) * 10], 1)
    centred = delta - delta.mean(0)
    slow = smooth(centred, 2.0)
    out["run_frames"] = len(run)
    out["correction_run_deg"] = float((refined.rotation - p.rotation[run]).norm(dim=1).mean() * 180 / math.pi)
    out["correction_run_lag1"] = lag1(delta)
    out["correction_jitter_share"] = float((centred - slow).pow(2).sum() / centred.pow(2).sum().clamp_min(1e-12))

    # 3. a held-out frame's correction from its neighbouring training frames' (interleaved split)
    is_val = torch.zeros(len(p.rotation), dtype=torch.bool, device=device)
    is_val[val] = True
    in_run = [i for i in range(1, len(run) - 1) if is_val[run[i]] and not is_val[run[i - 1]] and not is_val[run[i + 1]]]
    if in_run:
        idx = torch.tensor(in_run, device=device)
        ids = run[idx]
        guess = p[ids].clone()
        guess.rotation = guess.rotation + 0.5 * (refined.rotation[idx - 1] - p.rotation[run[idx - 1]]
                                                 + refined.rotation[idx + 1] - p.rotation[run[idx + 1]])
        guess.translation = guess.translation + 0.5 * (refined.translation[idx - 1] - p.translation[run[idx - 1]]
                                                       + refined.translation[idx + 1] - p.translation[run[idx + 1]])
        out["neighbour_val_frames"] = len(in_run)
        out["neighbour_psnr_tracked"] = float(frame_psnr(avatar, data, ids).mean())
        out["neighbour_psnr_from_neighbours"] = float(frame_psnr(avatar, data, ids, guess).mean())
        out["neighbour_psnr_refined"] = float(frame_psnr(avatar, data, ids, refined[idx]).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("avatars", type=Path, nargs="+")
    parser.add_argument("--window", type=int, default=140, help="consecutive frames refined")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--json", type=Path, default=Path("bench/out/pose_noise_analysis.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [analyse(a, device, args.window, args.sigmas) for a in args.avatars]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(f"\n{r['avatar']}")
        for k, v in r.items():
            if k != "avatar":
                print(f"  {k:<32} {v if isinstance(v, dict) else round(v, 3)}")


if __name__ == "__main__":
    main()
