"""Avatar checkpoints: one file that resumes training and serves renders, on any device.

A checkpoint is a ``torch.save`` dict (read back with ``weights_only=True``: plain data and
tensors, no code) holding everything on the CPU:

    format, version       "neuavatar.avatar", CHECKPOINT_VERSION
    config                the resolved AvatarConfig (plain data)
    head                  which head model, its sizes and fingerprint (a FLAME avatar needs the file)
    model                 the avatar's state dict
    stage, stage_step     where training is (stage index 0..2, steps done in it); done: stage == 3
    optimizer, rng        the optimiser's state and the random generators' (to resume exactly)
    history, identity     loss history; what the avatar was trained from and how
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from neuavatar.errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "neuavatar.avatar"
CHECKPOINT_VERSION = 2  # 2: the condition code holds the head's up direction
_REQUIRED = ("config", "head", "model", "stage", "stage_step")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors moved to the CPU) to ``path`` atomically: a crash mid-write leaves
    the previous checkpoint in place, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.writing")
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **_to_cpu(payload)}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU.

    Raises:
        CheckpointError: missing, damaged or truncated, not an avatar checkpoint, or another version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no avatar checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged, truncated or another kind of file): "
                              f"{first[:200]}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a NeuAvatar avatar checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is avatar checkpoint version {data.get('version')}; this NeuAvatar reads "
                              f"version {CHECKPOINT_VERSION}: train the avatar again with this version")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is incomplete")
    return data
