"""Which learned part of the avatar goes wrong on held-out expressions and poses?

On trained avatars (`bench/train.py --work` directories), held-out PSNR with: the learned parts as
trained, unbounded; their condition codes (expression, jaw, eyes; neck and up direction) clamped to the box the
training frames span (`Avatar.set_code_range`, which training now applies), so the learned maps
never extrapolate (the head model itself still follows the frame's parameters); and each learned conditioned part switched off (colour corrections,
pose-linear offsets, expression offsets).

    python bench/device/extrapolation_analysis.py WORK/CLIP/avatar_default ... --pictures OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from heldout_analysis import frame_psnr, load_trained  # noqa: E402


def main() -> None:
    from neuavatar.avatar.evaluate import evenly_spaced, side_by_side
    from neuavatar.avatar.mesh import condition_code
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("avatars", type=Path, nargs="+")
    parser.add_argument("--pictures", type=Path)
    parser.add_argument("--json", type=Path, default=Path("bench/out/extrapolation.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for avatar_dir in args.avatars:
        clip = avatar_dir.parent
        base, _, data = load_trained(avatar_dir, device)
        val, train = data.val_ids.to(device), data.train_ids.to(device)
        some_train = evenly_spaced(train, 64)
        base.set_code_range(data.params[train])  # what training now saves; "as trained" below is unbounded
        lo, hi = base.code_low.clone(), base.code_high.clone()
        val_codes = condition_code(base.with_identity(data.params[val]))
        outside = ((val_codes < lo) | (val_codes > hi)).float()
        row = {"avatar": str(avatar_dir), "val_frames_outside_box": float((outside.sum(1) > 0).float().mean()),
               "val_dims_outside_box_mean": float(outside.sum(1).mean()), "code_size": len(lo)}

        def variant(name, edit=None, clamp=False):
            avatar = copy.deepcopy(base)
            if edit is not None:
                with torch.no_grad():
                    edit(avatar)
            avatar.code_low.copy_(lo if clamp else torch.full_like(lo, -torch.inf))
            avatar.code_high.copy_(hi if clamp else torch.full_like(hi, torch.inf))
            row[name] = {"psnr_val": float(frame_psnr(avatar, data, val).mean()),
                         "psnr_train": float(frame_psnr(avatar, data, some_train).mean())}
            print(f"{clip.name[:28]:<28} {name:<28} val {row[name]['psnr_val']:6.2f}  train {row[name]['psnr_train']:6.2f}",
                  flush=True)
            return avatar

        variant("as trained")
        clamped = variant("codes clamped to training box", clamp=True)
        variant("no colour corrections", lambda a: a.gaussians.colour_basis.zero_())
        variant("no pose-linear offsets", lambda a: a.offsets.pose_to_offsets.zero_())
        variant("no expression offsets", lambda a: a.offsets.rank_to_offsets.zero_())
        variant("clamped, no colour corr.", lambda a: a.gaussians.colour_basis.zero_(), clamp=True)
        if args.pictures:
            args.pictures.mkdir(parents=True, exist_ok=True)
            side_by_side(clamped, data, evenly_spaced(val, 4), args.pictures / f"{clip.name[:20]}_clamped_sbs.png")
        rows.append(row)
        print(f"{clip.name[:28]:<28} held-out frames with a code outside the box: {100 * row['val_frames_outside_box']:.0f}%, "
              f"{row['val_dims_outside_box_mean']:.1f} of {row['code_size']} dimensions on average")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
