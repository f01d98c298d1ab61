"""Pictures of a dataset for a person to check: a contact sheet and the crop's path over time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from neuavatar.dataset import LABELS, Dataset
from neuavatar.landmarks import IBUG68_FROM_MEDIAPIPE

__all__ = ["LABEL_COLOURS", "colourise_labels", "contact_sheet", "crop_track_plot"]

# RGB colour per label (background is not drawn); unknown (255) is grey.
LABEL_COLOURS = np.array(
    [(0, 0, 0), (255, 200, 150), (150, 75, 220), (40, 230, 255), (255, 40, 40), (255, 120, 200), (60, 200, 90)],
    np.uint8,
)


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 colours."""
    lut = np.full((256, 3), 128, np.uint8)
    lut[: len(LABEL_COLOURS)] = LABEL_COLOURS
    return lut[labels]


def _tile(ds: Dataset, i: int, side: int) -> np.ndarray:
    """Frame ``i`` with labels blended in and landmarks drawn, beside its alpha; (side, 2*side, 3)."""
    rgb = ds.image(i)
    labels = ds.labels(i)
    colour = colourise_labels(labels)
    blend = np.where((labels > 0)[..., None], (0.55 * rgb + 0.45 * colour).astype(np.uint8), rgb)
    scale = side / rgb.shape[0]
    blend = cv2.resize(blend, (side, side), interpolation=cv2.INTER_AREA)
    if ds.valid[i]:
        lmk = ds.landmarks[i, :, :2] * scale
        for x, y in lmk:
            cv2.circle(blend, (int(x), int(y)), 1, (0, 255, 0), -1, cv2.LINE_AA)
        for x, y in lmk[list(IBUG68_FROM_MEDIAPIPE)]:
            cv2.circle(blend, (int(x), int(y)), 2, (255, 30, 30), -1, cv2.LINE_AA)
    alpha = cv2.resize((ds.alpha(i) * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_AREA)
    tile = np.concatenate([blend, np.repeat(alpha[..., None], 3, -1)], 1)
    status = f"#{i}  t={ds.times[i]:.2f}s  conf={ds.confidence[i]:.2f}" + ("" if ds.valid[i] else "  NO LANDMARKS")
    _text(tile, status, (6, 18), 0.5)
    return tile


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def contact_sheet(ds: Dataset, path: Path, *, frames: int = 8, tile_side: int = 256, columns: int = 2) -> Path:
    """Write a PNG grid of evenly spaced frames (labels, landmarks, alpha) with a header and legend."""
    picks = np.unique(np.linspace(0, ds.num_frames - 1, min(frames, ds.num_frames)).round().astype(int))
    tiles = [_tile(ds, int(i), tile_side) for i in picks]
    blank = np.zeros_like(tiles[0])
    while len(tiles) % columns:
        tiles.append(blank)
    rows = [np.concatenate(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)]
    grid = np.concatenate(rows, 0)
    header = np.full((86, grid.shape[1], 3), 32, np.uint8)
    m = ds.meta
    _text(header, f"{Path(m['source']['path']).name}: {m['num_frames']} frames at {m['fps']:.2f} fps, "
                  f"{m['size']}px crops, {int((~ds.valid).sum())} without landmarks", (10, 24), 0.6)
    x = 10
    for name, colour in zip(LABELS[1:], LABEL_COLOURS[1:]):
        cv2.rectangle(header, (x, 38), (x + 14, 52), tuple(int(c) for c in colour), -1)
        _text(header, name, (x + 20, 51), 0.45)
        x += 30 + 9 * len(name)
    _text(header, "green: 478 mesh points, red: 68 iBUG points; right of each frame: alpha", (10, 76), 0.45,
          (200, 200, 200))
    sheet = np.concatenate([header, grid], 0)
    cv2.imwrite(str(path), sheet[..., ::-1])
    return path


def crop_track_plot(times: np.ndarray, raw_centres: np.ndarray, centres: np.ndarray, side: float,
                    confidence: np.ndarray, found: np.ndarray, path: Path) -> Path:
    """Plot the crop centre over time (per-frame face and the smoothed crop), and detection confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True, constrained_layout=True)
    for ax, c, name in zip(axes[:2], (0, 1), ("x", "y")):
        ax.plot(times, raw_centres[:, c], ".", ms=2, color="0.6", label="per-frame face")
        ax.plot(times, centres[:, c], "-", lw=1.5, color="C0", label="crop centre (smoothed)")
        ax.set_ylabel(f"centre {name} (source px)")
        ax.legend(loc="best", fontsize=8)
    axes[2].plot(times, confidence, "-", color="C2", label="detection confidence")
    for t in times[~found]:
        axes[2].axvline(t, color="C3", alpha=0.3, lw=1)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_ylabel("confidence")
    axes[2].set_xlabel("time (s)    red lines: frames without a detected face")
    fig.suptitle(f"crop track: square side {side:.0f} source px")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
