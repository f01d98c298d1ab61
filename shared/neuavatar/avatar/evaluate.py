"""Held-out evaluation of an avatar, and the pictures a person checks: side by sides, loss curves,
a reenactment clip of the validation frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from neuavatar.avatar.data import AvatarData, Batch
from neuavatar.avatar.model import Avatar
from neuavatar.avatar.refine import refine_frames
from neuavatar.metrics.image import l1, ms_ssim, psnr, ssim
from neuavatar.progress import Progress, no_progress
from neuavatar.video import VideoWriter

__all__ = ["evaluate_avatar", "side_by_side", "loss_plot", "reenactment_clip", "mean_image", "evenly_spaced",
           "render_frames", "outline_band"]


@torch.no_grad()
def mean_image(data: AvatarData, chunk: int = 32) -> Tensor:
    """(S, S, 3) the mean training target: the baseline an avatar must beat clearly."""
    total = torch.zeros(data.size, data.size, 3, device=data.device)
    for ids in data.train_ids.split(chunk):
        total += data.batch(ids).target.sum(0)
    return total / len(data.train_ids)


def evenly_spaced(ids: Tensor, count: int) -> Tensor:
    """At most ``count`` of ``ids``, spread evenly from the first to the last."""
    if count <= 0 or len(ids) <= count:
        return ids
    return ids[torch.linspace(0, len(ids) - 1, count).round().long()]


def render_frames(avatar: Avatar, data: AvatarData, ids: Tensor, backend: str = "auto") -> tuple[Batch, Tensor]:
    """Frames ``ids``'s batch and the avatar's render of them, driven by their tracking, (B, S, S, 3) in [0, 1]."""
    batch = data.batch(ids)
    pred = avatar(batch.params, batch.intrinsics, data.size, data.background, backend=backend).colour
    return batch, pred.clamp(0, 1)


def outline_band(mask: Tensor, width: int) -> Tensor:
    """(B, S, S, 1) bool: pixels within ``width`` pixels of the edge of ``mask`` (B, S, S, 1) in [0, 1]."""
    m = (mask > 0.5).float().permute(0, 3, 1, 2)
    grown = torch.nn.functional.max_pool2d(m, 2 * width + 1, 1, width)
    shrunk = -torch.nn.functional.max_pool2d(-m, 2 * width + 1, 1, width)
    return (grown != shrunk).permute(0, 2, 3, 1)


@torch.no_grad()
def evaluate_avatar(avatar: Avatar, data: AvatarData, *, frames: int = 0, backend: str = "auto", lpips=None,
                    chunk: int = 8, train_frames: int = 32, refine: tuple[str, ...] = (), refine_steps: int = 0,
                    refine_lr: float = 2e-3, progress: Progress = no_progress) -> tuple[dict, dict[str, np.ndarray]]:
    """PSNR, SSIM, MS-SSIM, L1 (and LPIPS when given) of renders of the validation frames against
    their targets, with the same figures for the mean training image.

    Two more figures say where the error comes from: ``outline_error_share``, the share of the
    squared error within 1/64 of the image of the person's outline (misplaced hair edges against the
    background), and ``train_psnr`` on ``train_frames`` training frames (how well the avatar fits what
    it saw, against how well it generalises).

    With ``refine_steps``, the frames are also rendered with their ``refine`` parameters fitted to
    their images by the frozen avatar (``neuavatar.avatar.refine``): ``psnr_refined``,
    ``ssim_refined``, ``l1_refined`` and the mean corrections ``eval_tracking_correction`` say how
    much of the error is the tracking's.

    Returns:
        the means (and which frames), and per-frame arrays.
    """
    ids = data.val_ids
    split = "val"
    if len(ids) == 0:  # a dataset without a validation split: say so, report on training frames
        ids, split = data.train_ids, "train"
    ids = evenly_spaced(ids, frames)
    baseline = mean_image(data)
    per_frame: dict[str, list[Tensor]] = {k: [] for k in ("psnr", "ssim", "ms_ssim", "l1", "outline_error_share",
                                                          "baseline_psnr", "baseline_ssim")}
    if lpips is not None:
        per_frame["lpips"] = []
    refining = bool(refine_steps and refine)
    if refining:
        progress("refine", 0, len(ids))
        # 16 frames per optimisation step: fewer, fuller steps than the metrics' chunks of 8
        refined, corrections = refine_frames(avatar, data, ids, refine, refine_steps, refine_lr, chunk=16,
                                             backend=backend)
        progress("refine", len(ids), len(ids))
        per_frame.update(psnr_refined=[], ssim_refined=[], l1_refined=[])
    for k, chunk_ids in enumerate(ids.split(chunk)):
        batch, pred = render_frames(avatar, data, chunk_ids, backend)
        per_frame["psnr"].append(psnr(pred, batch.target))
        per_frame["ssim"].append(ssim(pred, batch.target))
        per_frame["ms_ssim"].append(ms_ssim(pred, batch.target))
        per_frame["l1"].append(l1(pred, batch.target))
        squared = (pred - batch.target).pow(2).sum(-1, keepdim=True)
        band = outline_band(batch.mask, max(1, data.size // 64))
        per_frame["outline_error_share"].append((squared * band).flatten(1).sum(1) /
                                                squared.flatten(1).sum(1).clamp_min(1e-12))
        base = baseline.expand_as(batch.target)
        per_frame["baseline_psnr"].append(psnr(base, batch.target))
        per_frame["baseline_ssim"].append(ssim(base, batch.target))
        if lpips is not None:
            per_frame["lpips"].append(lpips(pred, batch.target))
        if refining:  # the same frames, rendered with their refined parameters
            params = refined[k * chunk:k * chunk + len(chunk_ids)]
            pred = avatar(params, batch.intrinsics, data.size, data.background, backend=backend).colour.clamp(0, 1)
            per_frame["psnr_refined"].append(psnr(pred, batch.target))
            per_frame["ssim_refined"].append(ssim(pred, batch.target))
            per_frame["l1_refined"].append(l1(pred, batch.target))
        progress("evaluate", min(len(ids), (k + 1) * chunk), len(ids))
    arrays = {k: torch.cat(v).float().cpu().numpy() for k, v in per_frame.items()}
    metrics = {k: float(np.mean(v)) for k, v in arrays.items()}
    if refining:
        metrics["eval_tracking_correction"] = corrections
    metrics.update(eval_split=split, eval_frames=int(len(ids)))
    if train_frames and split == "val":
        fit = [psnr(pred, batch.target) for batch, pred in
               (render_frames(avatar, data, c, backend) for c in evenly_spaced(data.train_ids, train_frames).split(chunk))]
        metrics["train_psnr"] = float(torch.cat(fit).mean())
    arrays["frame"] = ids.cpu().numpy()
    return metrics, arrays


@torch.no_grad()
def side_by_side(avatar: Avatar, data: AvatarData, ids: Tensor, path: Path, backend: str = "auto") -> Path:
    """A PNG with one row per frame: ground truth | render | absolute error (x4, heat map)."""
    batch, pred = render_frames(avatar, data, ids, backend)
    rows = []
    for gt, im in zip(batch.target.cpu().numpy(), pred.cpu().numpy()):
        err = np.clip(np.abs(gt - im).mean(-1) * 4, 0, 1)
        heat = cv2.applyColorMap((err * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        rows.append(np.concatenate([(gt * 255).round().astype(np.uint8), (im * 255).round().astype(np.uint8), heat], 1))
    grid = np.concatenate(rows, 0)
    cv2.imwrite(str(path), grid[..., ::-1])
    return path


def loss_plot(history: list[dict], path: Path) -> Path:
    """Loss (log scale) and training PSNR over steps, one colour band per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuavatar.avatar.config import STAGES

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), constrained_layout=True, sharex=True)
    x = np.arange(len(history))
    for stage, name in enumerate(STAGES):
        sel = [i for i, h in enumerate(history) if h["stage"] == stage]
        if not sel:
            continue
        # one colour per stage in both panels (the geometry stage has no PSNR to plot)
        axes[0].plot(x[sel], [history[i]["loss"] for i in sel], lw=1, label=name, color=f"C{stage}")
        if any("psnr" in history[i] for i in sel):
            axes[1].plot(x[sel], [history[i].get("psnr", np.nan) for i in sel], lw=1, label=name, color=f"C{stage}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel("training PSNR (dB)")
    axes[1].set_xlabel("log entries (every 25 steps)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def reenactment_clip(avatar: Avatar, data: AvatarData, ids: Tensor, path: Path, fps: float, backend: str = "auto",
                     chunk: int = 8) -> Path:
    """An H.264 clip of frames ``ids``: the target beside the avatar driven by its tracking."""
    with VideoWriter(path, fps, crf=20) as writer:
        for chunk_ids in ids.split(chunk):
            batch, pred = render_frames(avatar, data, chunk_ids, backend)
            both = torch.cat([batch.target, pred], 2)
            for frame in (both * 255).round().byte().cpu().numpy():
                writer.write(frame)
    return path
