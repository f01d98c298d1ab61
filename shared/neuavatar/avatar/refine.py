"""Refining the tracked head parameters with the avatar itself (analysis by synthesis).

The tracker fits a head model without hair to the face's landmarks and pixels. On grimaces and
turned heads its rigid pose is off by about a degree, which the face hardly shows but which moves
the hair outline by several pixels at 512². The avatar renders the whole head, hair included, so it
can take the tracking the rest of the way: per frame t a small correction Δ_t of some parameters,

    θ'_t = θ_t + Δ_t,    Δ_t = argmin  w_l1 |I_t - Î(θ_t + Δ_t)| + w_ssim DSSIM + w_sil |α(θ_t + Δ_t) - M_t|

learned with the avatar for training frames (``lr_tracking``), and with the avatar frozen for new
frames (held-out evaluation, ``eval_refine_steps``). Both sides must be refined alike: an avatar
trained on refined poses and shown unrefined ones generalises worse than one that never refined.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuavatar.avatar.data import AvatarData, Batch
from neuavatar.avatar.model import Avatar
from neuavatar.head.model import HeadParams
from neuavatar.metrics.image import dssim_loss

__all__ = ["FrameCorrections", "REFINABLE", "refine_frames", "image_loss"]

REFINABLE = ("expression", "jaw", "neck", "eyes", "rotation", "translation")
# Units of the corrections as optimised: one step of Adam moves each by about its learning rate, and
# a degree of head rotation (0.017 rad) moves the outline about as much as 2 mm of translation.
_UNIT = {"translation": 0.1}


class FrameCorrections(nn.Module):
    """Per-frame additive corrections Δ (T, ...) of the head parameters ``names``, all zero at first."""

    def __init__(self, params: HeadParams, names: tuple[str, ...]):
        super().__init__()
        unknown = set(names) - set(REFINABLE)
        if unknown:
            raise ValueError(f"cannot refine {sorted(unknown)}: choose from {', '.join(REFINABLE)}")
        self.names = tuple(names)
        self.delta = nn.ParameterDict({n: nn.Parameter(torch.zeros_like(getattr(params, n))) for n in self.names})

    def forward(self, params: HeadParams, ids: Tensor) -> HeadParams:
        """``params`` (B) of frames ``ids`` (B,) with their corrections added."""
        return HeadParams(**{n: getattr(params, n) + _UNIT.get(n, 1.0) * self.delta[n][ids] if n in self.delta
                             else getattr(params, n) for n in ("shape", *REFINABLE)})

    def magnitude(self, ids: Tensor) -> dict[str, float]:
        """Mean absolute correction of each refined parameter over frames ``ids`` (radians, metres...)."""
        return {n: _UNIT.get(n, 1.0) * float(d[ids].detach().abs().mean()) for n, d in self.delta.items()}


def image_loss(avatar: Avatar, batch: Batch, params: HeadParams, data: AvatarData, w_l1: float = 0.8,
               w_ssim: float = 0.2, w_silhouette: float = 0.5, backend: str = "auto") -> Tensor:
    """The photometric and silhouette error of rendering ``params`` against ``batch``'s frames."""
    render = avatar(params, batch.intrinsics, data.size, data.background, backend=backend)
    loss = w_l1 * (render.colour - batch.target).abs().mean() + w_silhouette * (render.alpha - batch.mask).abs().mean()
    if w_ssim:
        loss = loss + w_ssim * dssim_loss(render.colour, batch.target)
    return loss


def refine_frames(avatar: Avatar, data: AvatarData, ids: Tensor, names: tuple[str, ...], steps: int, lr: float,
                  chunk: int = 16, backend: str = "auto") -> tuple[HeadParams, dict[str, float]]:
    """Frames ``ids``'s tracked parameters refined against their images with the avatar frozen.

    Returns:
        the refined parameters (len(ids)) and the mean absolute correction of each parameter.
    """
    frozen = [p for p in avatar.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    refined, sizes = [], {n: 0.0 for n in names}
    try:
        for chunk_ids in ids.split(chunk):
            batch = data.batch(chunk_ids)
            local = torch.arange(len(chunk_ids), device=data.device)
            corrections = FrameCorrections(batch.params, names).to(data.device)
            optimizer = torch.optim.Adam(corrections.parameters(), lr=lr)
            for _ in range(steps):
                with torch.enable_grad():
                    loss = image_loss(avatar, batch, corrections(batch.params, local), data, backend=backend)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                optimizer.step()
            refined.append(corrections(batch.params, local).detach())
            for n, v in corrections.magnitude(local).items():
                sizes[n] += v * len(chunk_ids) / len(ids)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return HeadParams.cat(refined), sizes
