"""Why held-out frames score lower than training frames: novelty, and whether the pose error is learnable.

For each trained avatar (a `bench/train.py --work` directory: CLIP/dataset, CLIP/tracking, CLIP/AVATAR):

- per held-out frame, PSNR against its *novelty*: the distance of its tracked expression and jaw
  (standardised by the training frames' spread) and of its head rotation (degrees) to the nearest
  training frame; PSNR of the least and most novel third;
- the rigid-pose corrections the frozen avatar finds (`refine_frames`, rotation + translation) on
  held-out frames and on training frames: their size, their frame-to-frame correlation (smooth
  drift or jitter), and whether a linear map from the tracked pose to the correction, fitted on
  the training frames, predicts the held-out ones (R², and the PSNR with the predicted correction,
  which uses no held-out pixels).

    python bench/device/heldout_analysis.py /tmp/trn/train_lp_d6_woman_faces_33s/avatar_default ... --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


def nearest(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(Q,) distance from each row of ``query`` (Q, D) to its nearest row of ``bank`` (N, D)."""
    return torch.cdist(query, bank).min(1).values


def lag1(x: torch.Tensor) -> float:
    """Mean over columns of the lag-1 autocorrelation of (T, D) ``x``: ~1 a smooth drift, ~0 jitter."""
    x = x - x.mean(0)
    num = (x[1:] * x[:-1]).sum(0)
    den = (x * x).sum(0).clamp_min(1e-12)
    return float((num / den).mean())


def load_trained(avatar_dir: Path, device: torch.device):
    """A `bench/train.py --work` avatar with its clip's data: (avatar, its config dict, AvatarData)."""
    from neuavatar.avatar.data import AvatarData
    from neuavatar.avatar.pipeline import _head_for, load_avatar
    from neuavatar.dataset import Dataset
    from neuavatar.track.tracking import Tracking

    clip = avatar_dir.parent
    avatar, meta = load_avatar(avatar_dir, device)
    cfg = meta["config"]
    # bench/train.py --track-variant NAME names its avatars avatar_NAME+VARIANT, tracked in tracking_NAME
    label = avatar_dir.name.removeprefix("avatar_").partition("+")
    tracking = Tracking.load(clip / (f"tracking_{label[0]}" if label[1] else "tracking"))
    head, _ = _head_for(tracking, device)
    data = AvatarData(Dataset(clip / "dataset"), tracking, head, cfg["size"], tuple(cfg["background"]), device)
    return avatar, cfg, data


@torch.no_grad()
def frame_psnr(avatar, data, ids, params=None) -> torch.Tensor:
    from neuavatar.metrics.image import psnr

    out = []
    for k in range(0, len(ids), 8):
        chunk = ids[k:k + 8]
        batch = data.batch(chunk)
        p = batch.params if params is None else params[k:k + 8]
        pred = avatar(p, batch.intrinsics, data.size, data.background).colour.clamp(0, 1)
        out.append(psnr(pred, batch.target))
    return torch.cat(out)


def analyse(avatar_dir: Path, device: torch.device, train_sample: int) -> dict:
    from neuavatar.avatar.evaluate import evenly_spaced
    from neuavatar.avatar.refine import refine_frames

    avatar, cfg, data = load_trained(avatar_dir, device)
    val, train = data.val_ids.to(device), data.train_ids.to(device)
    sample = evenly_spaced(train, train_sample)
    p = data.params

    # novelty of each held-out frame
    face = torch.cat([p.expression, p.jaw], 1)
    std = face[train].std(0).clamp_min(1e-6)
    face_novelty = nearest(face[val] / std, face[train] / std) / math.sqrt(face.shape[1])
    rot_novelty = nearest(p.rotation[val], p.rotation[train]) * 180 / math.pi
    psnr_val = frame_psnr(avatar, data, val)
    psnr_train = frame_psnr(avatar, data, sample)
    order = face_novelty.argsort()
    third = max(1, len(val) // 3)

    # the rigid corrections the frozen avatar finds, on held-out and training frames
    names = ("rotation", "translation")
    refined_val, _ = refine_frames(avatar, data, val, names, cfg["eval_refine_steps"] or 50, cfg["eval_refine_lr"])
    refined_train, _ = refine_frames(avatar, data, sample, names, cfg["eval_refine_steps"] or 50, cfg["eval_refine_lr"])

    def delta(refined, ids):
        return torch.cat([refined.rotation - p.rotation[ids], refined.translation - p.translation[ids]], 1)

    d_val, d_train = delta(refined_val, val), delta(refined_train, sample)
    # a linear map tracked pose (rotation, translation, neck, jaw) -> correction, ridge-fitted on training frames
    def features(ids):
        return torch.cat([torch.ones(len(ids), 1, device=device), p.rotation[ids], p.translation[ids] * 10,
                          p.neck[ids], p.jaw[ids]], 1)

    x_train, x_val = features(sample), features(val)
    eye = torch.eye(x_train.shape[1], device=device) * 1e-3
    w = torch.linalg.solve(x_train.T @ x_train + eye, x_train.T @ d_train)
    predicted = x_val @ w
    r2 = 1 - (d_val - predicted).pow(2).sum() / (d_val - d_val.mean(0)).pow(2).sum().clamp_min(1e-12)

    def shifted(correction):  # the held-out frames' tracking plus a (6,) or (V, 6) rigid correction
        out = p[val].clone()
        out.rotation, out.translation = out.rotation + correction[..., :3], out.translation + correction[..., 3:]
        return out

    psnr_predicted = frame_psnr(avatar, data, val, shifted(predicted))
    psnr_refined = frame_psnr(avatar, data, val, refined_val)
    mean_train_delta = d_train.mean(0)
    psnr_constant = frame_psnr(avatar, data, val, shifted(mean_train_delta))

    deg = 180 / math.pi
    return {
        "avatar": str(avatar_dir), "val_frames": len(val), "train_frames_scored": len(sample),
        "psnr_val": float(psnr_val.mean()), "psnr_train": float(psnr_train.mean()),
        "psnr_val_least_novel_third": float(psnr_val[order[:third]].mean()),
        "psnr_val_most_novel_third": float(psnr_val[order[-third:]].mean()),
        "corr_psnr_face_novelty": float(torch.corrcoef(torch.stack([psnr_val, face_novelty]))[0, 1]),
        "corr_psnr_rotation_novelty": float(torch.corrcoef(torch.stack([psnr_val, rot_novelty]))[0, 1]),
        "face_novelty_val_median": float(face_novelty.median()),
        "rotation_novelty_val_deg_median": float(rot_novelty.median()),
        "rotation_novelty_val_deg_max": float(rot_novelty.max()),
        "psnr_val_refined": float(psnr_refined.mean()),
        "correction_val_deg": float(d_val[:, :3].norm(dim=1).mean() * deg),
        "correction_train_deg": float(d_train[:, :3].norm(dim=1).mean() * deg),
        "correction_val_mm": float(d_val[:, 3:].norm(dim=1).mean() * 1000),
        "correction_train_mm": float(d_train[:, 3:].norm(dim=1).mean() * 1000),
        "correction_val_lag1": lag1(d_val),
        "correction_val_mean_deg": (d_val[:, :3].mean(0) * deg).tolist(),
        "correction_train_mean_deg": (mean_train_delta[:3] * deg).tolist(),
        "linear_correction_r2_val": float(r2),
        "psnr_val_linear_correction": float(psnr_predicted.mean()),
        "psnr_val_constant_correction": float(psnr_constant.mean()),
        "per_frame": {"psnr": psnr_val.tolist(), "face_novelty": face_novelty.tolist(),
                      "rotation_novelty_deg": rot_novelty.tolist(), "psnr_refined": psnr_refined.tolist()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("avatars", type=Path, nargs="+")
    parser.add_argument("--train-sample", type=int, default=128, help="training frames scored and refined")
    parser.add_argument("--json", type=Path, default=Path("bench/out/heldout_analysis.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [analyse(a, device, args.train_sample) for a in args.avatars]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    keys = ("psnr_train", "psnr_val", "psnr_val_least_novel_third", "psnr_val_most_novel_third",
            "corr_psnr_face_novelty", "corr_psnr_rotation_novelty", "rotation_novelty_val_deg_max",
            "psnr_val_refined", "correction_val_deg", "correction_train_deg", "correction_val_lag1",
            "linear_correction_r2_val", "psnr_val_linear_correction", "psnr_val_constant_correction")
    for r in rows:
        print(f"\n{r['avatar']}")
        for k in keys:
            print(f"  {k:<32} {r[k]:8.3f}")
        print(f"  correction_val_mean_deg          {[round(v, 2) for v in r['correction_val_mean_deg']]}")
        print(f"  correction_train_mean_deg        {[round(v, 2) for v in r['correction_train_mean_deg']]}")


if __name__ == "__main__":
    main()
