"""What the trainer learns from: a dataset's frames and its tracking, resized, masked, on the device.

The avatar covers the head, hair and neck, not the torso (the head model ends at the base of the
neck, and the shoulders move on their own). So each frame's target is the person's alpha matte
without the torso: what the tracked head mesh (dilated a little) does not cover, below the base of
the neck or, where labelled neck/torso, below the chin. Targets are composited over the avatar's background colour with that mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neuavatar.avatar.model import mesh_coverage
from neuavatar.dataset import LABELS, Dataset
from neuavatar.errors import DatasetError
from neuavatar.head.model import HeadModel, HeadParams
from neuavatar.progress import Progress, no_progress
from neuavatar.track.tracking import Tracking

__all__ = ["AvatarData", "Batch"]

CHIN = 152  # MediaPipe's landmark at the bottom of the chin


@dataclass
class Batch:
    """Frames ``ids`` (B,): target (B, S, S, 3) composited over the background, mask (B, S, S, 1),
    hair (B, S, S, 1) pixels labelled hair, head parameters and intrinsics (B, 4)."""

    ids: Tensor
    target: Tensor
    mask: Tensor
    hair: Tensor
    params: HeadParams
    intrinsics: Tensor


class AvatarData:
    """All frames of a dataset at the training size, kept on ``device`` as uint8."""

    def __init__(self, dataset: Dataset, tracking: Tracking, head: HeadModel, size: int, background: tuple,
                 device: torch.device, progress: Progress = no_progress):
        if tracking.num_frames != dataset.num_frames:
            raise DatasetError(f"the tracking has {tracking.num_frames} frames but the dataset {dataset.num_frames}: "
                               "track this dataset again")
        self.size, self.device = size, device
        self.num_frames = dataset.num_frames
        self.background = torch.tensor(background, dtype=torch.float32, device=device)
        self.params = tracking.head_params(device=device)
        self.intrinsics = torch.from_numpy(tracking.arrays["intrinsics"]).float().to(device) * (size / dataset.size)
        valid = dataset.valid & tracking.arrays["valid"]
        split = dataset.split
        self.train_ids = torch.tensor([i for i in split["train"] if valid[i]], dtype=torch.long)
        self.val_ids = torch.tensor([i for i in split["val"] if valid[i]], dtype=torch.long)
        if len(self.train_ids) == 0:
            raise DatasetError(f"{dataset.root} has no training frames with a tracked face")

        hair_label, torso_label = LABELS.index("hair"), LABELS.index("neck_torso")

        frames = dataset.resized(size, ("image", "alpha", "labels"), progress=progress)
        self.images = torch.from_numpy(frames["image"]).to(device)  # (T, S, S, 3) uint8
        labels_t = torch.from_numpy(frames["labels"]).to(device)
        alpha_t = torch.from_numpy(frames["alpha"]).to(device)
        covered = self._head_coverage(head, size)
        # What the head mesh does not cover is torso when it lies below the mesh's lowest point (the
        # base of the neck), or when it is labelled neck/torso and lies below the chin (above the
        # chin that label is often long hair: the labels are heuristic).
        rows = torch.arange(size, device=device)[None, :, None]
        lowest = torch.where(covered, rows, -1).flatten(1).amax(1)  # (T,)
        chin = torch.from_numpy(np.nan_to_num(dataset.landmarks[:, CHIN, 1]) * (size / dataset.size)).to(device)
        torso = (rows > lowest[:, None, None]) | ((labels_t == torso_label) & (rows > chin[:, None, None]))
        keep = ~torso | covered
        self.masks = (alpha_t * keep * 255).round().byte()  # (T, S, S)
        self.hair = labels_t == hair_label

    @torch.no_grad()
    def _head_coverage(self, head: HeadModel, size: int, chunk: int = 32) -> Tensor:
        """(T, S, S) bool: the tracked head mesh's coverage, dilated by ~2% of the image."""
        radius = max(1, size // 48)
        out = []
        for ids in torch.arange(self.num_frames, device=self.device).split(chunk):
            vertices = head(self.params[ids]).vertices
            cov = mesh_coverage(vertices, head.faces, self.intrinsics[ids], size)[..., 0] > 0.5
            cov = torch.nn.functional.max_pool2d(cov[:, None].float(), 2 * radius + 1, 1, radius)[:, 0] > 0
            out.append(cov)
        return torch.cat(out)

    def batch(self, ids: Tensor) -> Batch:
        """The frames ``ids`` (B,) ready for a loss."""
        ids = ids.to(self.device)
        image = self.images[ids].float() / 255
        mask = self.masks[ids].float()[..., None] / 255
        target = image * mask + self.background * (1 - mask)
        return Batch(ids=ids, target=target, mask=mask, hair=self.hair[ids][..., None].float(),
                     params=self.params[ids], intrinsics=self.intrinsics[ids])
