"""What the trainer learns from: a dataset's frames and its tracking, resized, masked, on the device.

The avatar covers the head, hair and neck, not the torso (the head model ends at the base of the
neck, and the shoulders move on their own). So each frame's target is the person's alpha matte
above the avatar's neck cut (``neuavatar.avatar.cut``: the same smooth boundary every render has),
less what is labelled neck/torso below the chin and outside the tracked head mesh (dilated a
little): clothing beside the neck. Targets are composited over the avatar's background colour with
that mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neuavatar.avatar.cut import NeckCut, cut_mask
from neuavatar.avatar.model import mesh_coverage
from neuavatar.dataset import LABELS, Dataset
from neuavatar.errors import DatasetError
from neuavatar.head.model import HeadModel, HeadParams
from neuavatar.progress import Progress, no_progress
from neuavatar.render import model_to_camera
from neuavatar.track.tracking import Tracking

__all__ = ["AvatarData", "Batch"]

CHIN = 152  # MediaPipe's landmark at the bottom of the chin


@dataclass
class Batch:
    """Frames ``ids`` (B,): target (B, S, S, 3) composited over the background, mask (B, S, S, 1),
    hair (B, S, S, 1) and mouth (B, S, S, 1) pixels labelled hair, and lips or mouth interior; head
    parameters and intrinsics (B, 4)."""

    ids: Tensor
    target: Tensor
    mask: Tensor
    hair: Tensor
    mouth: Tensor
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
        mouth_labels = LABELS.index("lips"), LABELS.index("mouth_interior")

        frames = dataset.resized(size, ("image", "alpha", "labels"), progress=progress)
        self.images = torch.from_numpy(frames["image"]).to(device)  # (T, S, S, 3) uint8
        labels_t = torch.from_numpy(frames["labels"]).to(device)
        alpha_t = torch.from_numpy(frames["alpha"]).to(device)
        covered, cut = self._head_coverage(head, size)
        # Beside the neck, what the head mesh does not cover is clothing where it is labelled
        # neck/torso below the chin (above the chin that label is often long hair: the labels are heuristic).
        rows = torch.arange(size, device=device)[None, :, None]
        chin = torch.from_numpy(np.nan_to_num(dataset.landmarks[:, CHIN, 1]) * (size / dataset.size)).to(device)
        clothing = (labels_t == torso_label) & (rows > chin[:, None, None]) & ~covered
        self.masks = (alpha_t * ~clothing * cut * 255).round().byte()  # (T, S, S)
        self.hair = (labels_t == hair_label) & (cut > 0.5)
        self.mouth = (labels_t == mouth_labels[0]) | (labels_t == mouth_labels[1])

    @torch.no_grad()
    def _head_coverage(self, head: HeadModel, size: int, chunk: int = 32) -> tuple[Tensor, Tensor]:
        """(T, S, S) bool: the tracked head mesh's coverage, dilated by ~2% of the image; and (T, S, S)
        the neck cut's mask m in [0, 1] (``neuavatar.avatar.cut``)."""
        radius = max(1, size // 48)
        neck = NeckCut.from_head(head.template, head.faces).to(self.device)
        covered, cut = [], []
        for ids in torch.arange(self.num_frames, device=self.device).split(chunk):
            vertices = head(self.params[ids]).vertices
            cov = mesh_coverage(vertices, head.faces, self.intrinsics[ids], size)[..., 0] > 0.5
            covered.append(torch.nn.functional.max_pool2d(cov[:, None].float(), 2 * radius + 1, 1, radius)[:, 0] > 0)
            cut.append(cut_mask(model_to_camera(neck.ring(vertices)), self.intrinsics[ids], size)[..., 0])
        return torch.cat(covered), torch.cat(cut)

    def batch(self, ids: Tensor) -> Batch:
        """The frames ``ids`` (B,) ready for a loss."""
        ids = ids.to(self.device)
        image = self.images[ids].float() / 255
        mask = self.masks[ids].float()[..., None] / 255
        target = image * mask + self.background * (1 - mask)
        return Batch(ids=ids, target=target, mask=mask, hair=self.hair[ids][..., None].float(),
                     mouth=self.mouth[ids][..., None].float(), params=self.params[ids], intrinsics=self.intrinsics[ids])
