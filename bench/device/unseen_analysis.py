"""Are held-out speckles Gaussians the training frames never showed? Seen weight against colour
saturation, and held-out PSNR once unseen Gaussians take their seen neighbours' colours.

The suspicion: a Gaussian hidden behind others in every training frame (inside the mouth, under the
hair) learns its colour from almost no light, and Adam's normalised steps turn those tiny gradients
into full-size moves, so its colour drifts to a saturated extreme that a new expression reveals.
How much Gaussian i was seen: seen_i = Σ_frames Σ_pixels T_i(p) α_i(p), its blending weight.
(Measured on d3 and d6 at 512²: it is not so; see bench/RESULTS.md.)

    python bench/device/unseen_analysis.py WORK/CLIP/avatar_default ... --pictures OUT --json OUT.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from heldout_analysis import frame_psnr, load_trained  # noqa: E402

from neuavatar.avatar.data import AvatarData  # noqa: E402
from neuavatar.avatar.gaussians import BoundGaussians, WorldGaussians  # noqa: E402
from neuavatar.avatar.mesh import adjacent_faces  # noqa: E402
from neuavatar.avatar.model import Avatar, splat  # noqa: E402


def seen_weight(avatar: Avatar, data: AvatarData, ids: Tensor, chunk: int = 8, backend: str = "auto") -> Tensor:
    """(N,) each Gaussian's blending weight summed over the pixels of frames ``ids`` (B,), with
    their tracking as it stands in ``data``.

    The render is linear in the colours, C(p) = Σ_i T_i(p) α_i(p) c_i + T(p) bg, so the gradient of
    Σ_p C(p) with respect to c_i is exactly Σ_p T_i(p) α_i(p).
    """
    total = torch.zeros(len(avatar.gaussians), device=data.device)
    for chunk_ids in ids.to(data.device).split(chunk):
        batch = data.batch(chunk_ids)
        with torch.no_grad():
            placed, _, _ = avatar.place(batch.params)
        colours = torch.zeros_like(placed.colours[..., :1]).requires_grad_(True)  # (B, N, 1)
        probe = WorldGaussians(placed.means, placed.quats, placed.scales, placed.opacities, colours)
        with torch.enable_grad():
            rendered, _ = splat(probe, batch.intrinsics, data.size, None, backend)
            (grad,) = torch.autograd.grad(rendered.sum(), colours)
        total += grad[..., 0].sum(0)
    return total


@torch.no_grad()
def fill_unseen(gaussians: BoundGaussians, seen: Tensor, faces: Tensor, min_seen: float) -> int:
    """Give the Gaussians with ``seen`` (N,) below ``min_seen`` pixels the seen-weighted mean colour
    of the seen Gaussians on their triangle or, where it has none, on the nearest triangles (rings of
    edge neighbours), and zero expression-driven colour correction. Returns how many changed."""
    parent = gaussians.parent
    num_faces = len(faces)
    unseen = seen < min_seen
    if not bool(unseen.any()):
        return 0
    colour = torch.sigmoid(gaussians.colour_logit)  # (N, 3)
    w = torch.where(unseen, torch.zeros_like(seen), seen)[:, None]
    tri_sum = torch.zeros(num_faces, 3, device=seen.device).index_add_(0, parent, colour * w)
    tri_weight = torch.zeros(num_faces, 1, device=seen.device).index_add_(0, parent, w)
    known = tri_weight[:, 0] > 0
    tri_colour = tri_sum / tri_weight.clamp_min(1e-12)
    pairs = adjacent_faces(faces.to(seen.device))
    a, b = torch.cat([pairs[:, 0], pairs[:, 1]]), torch.cat([pairs[:, 1], pairs[:, 0]])
    while not bool(known.all()):  # grow the known colours one ring of neighbours at a time
        from_known = known[b].float()[:, None]
        ring_sum = torch.zeros_like(tri_colour).index_add_(0, a, tri_colour[b] * from_known)
        ring_count = torch.zeros(num_faces, 1, device=seen.device).index_add_(0, a, from_known)
        new = ~known & (ring_count[:, 0] > 0)
        if not bool(new.any()):
            break  # triangles cut off from every seen one keep their colours
        tri_colour[new] = ring_sum[new] / ring_count[new]
        known |= new
    change = unseen & known[parent]
    gaussians.colour_logit[change] = torch.logit(tri_colour[parent[change]].clamp(0.02, 0.98))
    if gaussians.colour_rank:
        gaussians.colour_basis[change] = 0.0
    return int(change.sum())


def main() -> None:
    from neuavatar.avatar.evaluate import evenly_spaced, side_by_side

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("avatars", type=Path, nargs="+")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--pictures", type=Path)
    parser.add_argument("--json", type=Path, default=Path("bench/out/unseen.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for avatar_dir in args.avatars:
        clip = avatar_dir.parent
        avatar, _, data = load_trained(avatar_dir, device)
        val = data.val_ids.to(device)
        seen = seen_weight(avatar, data, data.train_ids)
        colour = torch.sigmoid(avatar.gaussians.colour_logit.detach())
        saturation = colour.max(1).values - colour.min(1).values
        buckets = {}
        for lo, hi in ((0, 0.1), (0.1, 1), (1, 10), (10, 100), (100, float("inf"))):
            m = (seen >= lo) & (seen < hi)
            buckets[f"{lo}-{hi}"] = {"count": int(m.sum()), "saturation_mean": float(saturation[m].mean()) if m.any() else None,
                                     "saturated_share": float((saturation[m] > 0.5).float().mean()) if m.any() else None}
        row = {"avatar": str(avatar_dir), "gaussians": len(seen), "seen_quantiles": torch.quantile(
            seen, torch.tensor([0.01, 0.05, 0.1, 0.25, 0.5], device=device)).tolist(), "buckets": buckets,
            "psnr_val": float(frame_psnr(avatar, data, val).mean()), "filled": {}}
        state = copy.deepcopy(avatar.gaussians.state_dict())
        for t in args.thresholds:
            avatar.gaussians.load_state_dict(state)
            n = fill_unseen(avatar.gaussians, seen, avatar.head.faces, t)
            row["filled"][str(t)] = {"changed": n, "psnr_val": float(frame_psnr(avatar, data, val).mean()),
                                    "psnr_train": float(frame_psnr(avatar, data, evenly_spaced(data.train_ids.to(device), 64)).mean())}
            if args.pictures and t == 1.0:
                args.pictures.mkdir(parents=True, exist_ok=True)
                side_by_side(avatar, data, evenly_spaced(val, 4), args.pictures / f"{clip.name[:20]}_filled_sbs.png")
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items()}, indent=None))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
