"""Image quality for evaluating avatars: PSNR, SSIM, MS-SSIM, L1 and LPIPS, plus the DSSIM loss.

    scores = image_metrics(rendered, target, mask, lpips=load_lpips(weights_path))

Images are float (B, H, W, 3) in [0, 1]; per-image metrics return (B,). LPIPS needs weights the
user supplies (``metrics.lpips`` says which files it reads).
"""

from neuavatar.metrics.image import (
    PSNR_MAX_DB,
    dssim_loss,
    image_metrics,
    l1,
    ms_ssim,
    ms_ssim_win_size,
    psnr,
    ssim,
    ssim_win_size,
)
from neuavatar.metrics.lpips import LPIPS, load_lpips

__all__ = [
    "PSNR_MAX_DB",
    "psnr",
    "ssim",
    "ms_ssim",
    "l1",
    "image_metrics",
    "dssim_loss",
    "ssim_win_size",
    "ms_ssim_win_size",
    "LPIPS",
    "load_lpips",
]
