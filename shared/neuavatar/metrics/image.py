"""Full-reference image quality: PSNR, SSIM, MS-SSIM, L1, and the DSSIM training loss.

Images are float (B, H, W, 3) in [0, 1], channels last as the renderers write them; every metric
returns (B,) per-image values. SSIM and MS-SSIM come from ``pytorch_msssim`` (Gaussian window,
sigma 1.5, K = (0.01, 0.03), data range 1), which wants channels first.

Window sizes. The standard window is 11 pixels. SSIM uses it when the smaller image side S is at
least 11, else the largest odd window <= S, and refuses images under 3x3 (ValueError). MS-SSIM filters at five scales (four 2x downsamplings)
and ``pytorch_msssim`` asserts S > (win - 1) * 16, so it uses 11 from S = 161 up and otherwise the
largest odd win >= 3 that passes (9 from 129, 7 from 97, 5 from 65, 3 from 33); below S = 33 it
returns NaN. Values computed with a smaller window are not comparable with published 11-pixel ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytorch_msssim
import torch
from torch import Tensor

__all__ = [
    "PSNR_MAX_DB",
    "SSIM_WIN_SIZE",
    "psnr",
    "ssim",
    "ms_ssim",
    "l1",
    "image_metrics",
    "dssim_loss",
    "ssim_win_size",
    "ms_ssim_win_size",
]

PSNR_MAX_DB = 100.0
"""PSNR of identical images. A per-frame inf would make every mean over a test set inf, so the MSE
is floored at 1e-10 (100 dB at data range 1), far above any real reconstruction (~20-45 dB)."""

SSIM_WIN_SIZE = 11
"""The standard Gaussian window (Wang et al. 2004), used wherever the image is big enough."""

_MS_SSIM_DOWNSAMPLINGS = 4  # pytorch_msssim's five default scale weights


def ssim_win_size(side: int) -> int:
    """The SSIM window for images whose smaller side is ``side`` pixels: 11, or the largest odd <= side."""
    return min(SSIM_WIN_SIZE, side if side % 2 else side - 1)


def ms_ssim_win_size(side: int) -> int | None:
    """The MS-SSIM window for a smaller side of ``side`` pixels, or None when even 3 is too big.

    The largest odd win <= 11 with side > (win - 1) * 2**4 (pytorch_msssim's assertion).
    """
    even = (side - 1) // 2**_MS_SSIM_DOWNSAMPLINGS // 2 * 2  # largest even (win - 1) that passes
    win = min(SSIM_WIN_SIZE, even + 1)
    return win if win >= 3 else None


def _check_images(pred: Tensor, target: Tensor) -> None:
    if pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(f"pred: expected images (B, H, W, 3), got shape {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"target: expected the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")


def _check_mask(mask: Tensor, pred: Tensor) -> Tensor:
    if mask.shape != (*pred.shape[:3], 1):
        raise ValueError(f"mask: expected shape {(*pred.shape[:3], 1)} (B, H, W, 1), got {tuple(mask.shape)}")
    return mask.to(_compute_dtype(pred))


def _compute_dtype(x: Tensor) -> torch.dtype:
    # half precision loses SSIM's small constants (C1 = 1e-4) and PSNR's small errors
    return torch.promote_types(x.dtype, torch.float32)


def _channels_first(x: Tensor) -> Tensor:
    """(B, H, W, 3) -> (B, 3, H, W) in at least float32, as pytorch_msssim wants."""
    return x.to(_compute_dtype(x)).permute(0, 3, 1, 2)


def _masked_mean(err: Tensor, mask: Tensor | None) -> Tensor:
    """(B,) mean of per-pixel errors (B, H, W, 3), over the pixels of ``mask`` (B, H, W, 1) if given.

    The mask weights pixels (soft masks allowed); an image with an empty mask gets NaN.
    """
    if mask is None:
        return err.flatten(1).mean(1)
    weighted = (err * mask).flatten(1).sum(1)
    return weighted / (mask.flatten(1).sum(1) * err.shape[-1])


def psnr(pred: Tensor,  # (B, H, W, 3)
         target: Tensor,  # (B, H, W, 3)
         mask: Tensor | None = None,  # (B, H, W, 1)
         ) -> Tensor:  # (B,)
    """Peak signal-to-noise ratio in dB, data range 1, capped at ``PSNR_MAX_DB`` for identical images.

    Args:
        pred, target: (B, H, W, 3) images in [0, 1].
        mask: optional (B, H, W, 1) weights in [0, 1] (bool works): the MSE is averaged over the
            masked pixels only. An image whose mask is empty gets NaN.
    Returns:
        (B,) PSNR per image.
    """
    _check_images(pred, target)
    m = None if mask is None else _check_mask(mask, pred)
    dtype = _compute_dtype(pred)
    mse = _masked_mean((pred.to(dtype) - target.to(dtype)).square(), m)
    return -10 * torch.log10(mse.clamp_min(10 ** (-PSNR_MAX_DB / 10)))


def l1(pred: Tensor,  # (B, H, W, 3)
       target: Tensor,  # (B, H, W, 3)
       mask: Tensor | None = None,  # (B, H, W, 1)
       ) -> Tensor:  # (B,)
    """(B,) mean absolute error per image, over the pixels of ``mask`` if given (NaN where it is empty)."""
    _check_images(pred, target)
    m = None if mask is None else _check_mask(mask, pred)
    dtype = _compute_dtype(pred)
    return _masked_mean((pred.to(dtype) - target.to(dtype)).abs(), m)


def ssim(pred: Tensor,  # (B, H, W, 3)
         target: Tensor,  # (B, H, W, 3)
         ) -> Tensor:  # (B,)
    """(B,) structural similarity per image (mean over pixels and channels), 1 for identical images.

    The window is ``ssim_win_size(min(H, W))``: 11 from 11 pixels up (module docstring).

    Raises:
        ValueError: the images are smaller than 3x3 (pytorch_msssim also drops size-1 dimensions).
    """
    _check_images(pred, target)
    if min(pred.shape[1:3]) < 3:
        raise ValueError(f"pred: SSIM needs images of at least 3x3 pixels, got {tuple(pred.shape[1:3])}")
    win = ssim_win_size(min(pred.shape[1:3]))
    return pytorch_msssim.ssim(_channels_first(pred), _channels_first(target), data_range=1.0,
                               size_average=False, win_size=win)


def ms_ssim(pred: Tensor,  # (B, H, W, 3)
            target: Tensor,  # (B, H, W, 3)
            ) -> Tensor:  # (B,)
    """(B,) multi-scale SSIM per image, 1 for identical images.

    The window is ``ms_ssim_win_size(min(H, W))``: 11 from 161 pixels up, smaller below, and NaN
    for every image when the smaller side is under 33 pixels (module docstring).
    """
    _check_images(pred, target)
    win = ms_ssim_win_size(min(pred.shape[1:3]))
    if win is None:
        return torch.full(pred.shape[:1], math.nan, dtype=_compute_dtype(pred), device=pred.device)
    return pytorch_msssim.ms_ssim(_channels_first(pred), _channels_first(target), data_range=1.0,
                                  size_average=False, win_size=win)


def dssim_loss(pred: Tensor,  # (B, H, W, 3)
               target: Tensor,  # (B, H, W, 3)
               ) -> Tensor:  # ()
    """Differentiable scalar (1 - SSIM) / 2, mean over the batch: the SSIM half of an L1 + SSIM loss.

    In [0, 1]; 0 for identical images. Gradients flow to both arguments.
    """
    return ((1 - ssim(pred, target)) / 2).mean()


@torch.no_grad()
def image_metrics(pred: Tensor,  # (B, H, W, 3)
                  target: Tensor,  # (B, H, W, 3)
                  mask: Tensor | None = None,  # (B, H, W, 1)
                  lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
                  ) -> dict[str, float]:
    """Batch means of every metric: keys "psnr", "ssim", "ms_ssim", "l1" (and "lpips" if given).

    The mask restricts PSNR and L1 only; SSIM, MS-SSIM and LPIPS see whole images. NaN values
    (empty masks, images too small for MS-SSIM) are left out of the means; a metric that is NaN
    for every image is NaN.

    Args:
        pred, target: (B, H, W, 3) images in [0, 1]. mask: optional (B, H, W, 1) in [0, 1].
        lpips: optional model mapping (pred, target) to (B,) distances, e.g. ``metrics.LPIPS``.
    """
    values = {
        "psnr": psnr(pred, target, mask),
        "ssim": ssim(pred, target),
        "ms_ssim": ms_ssim(pred, target),
        "l1": l1(pred, target, mask),
    }
    if lpips is not None:
        values["lpips"] = lpips(pred, target)
    return {name: float(v.float().nanmean()) for name, v in values.items()}
