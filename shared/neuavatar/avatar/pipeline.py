"""The train stage: a dataset and its tracking become an avatar directory.

    AVATAR/
      avatar.pt         the servable checkpoint (neuavatar.avatar.checkpoint; no optimiser state)
      avatar.json       format, what it was trained from, the resolved config, metrics, versions
      metrics.json      held-out figures (and the mean-image baseline's), per-frame values, timings
      losses.png        loss and training PSNR over the stages
      side_by_side.png  validation frames: ground truth | render | error
      reenact_val.mp4   the validation frames, ground truth beside the avatar driven by their tracking

Training works in ``.AVATAR.training/`` beside the output and writes a resumable checkpoint there
every ``checkpoint_every`` steps: a run that is stopped or killed continues from it when started
again with the same inputs and settings. Only a finished avatar is moved into place.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neuavatar import __version__
from neuavatar.avatar.checkpoint import load_checkpoint, save_checkpoint
from neuavatar.avatar.config import AvatarConfig
from neuavatar.avatar.data import AvatarData
from neuavatar.avatar.evaluate import evaluate_avatar, evenly_spaced, loss_plot, reenactment_clip, side_by_side
from neuavatar.avatar.model import Avatar
from neuavatar.avatar.trainer import AvatarTrainer
from neuavatar.config import from_dict, resolve_device, to_dict
from neuavatar.dataset import Dataset
from neuavatar.errors import CheckpointError, DatasetError
from neuavatar.outputs import check_output, replace_dir, tool_versions
from neuavatar.progress import Progress, no_progress
from neuavatar.track.models import load_head_model
from neuavatar.track.options import TrackerOptions
from neuavatar.track.tracking import Tracking

__all__ = ["train_avatar", "TrainResult", "load_avatar", "AVATAR_FILE", "AVATAR_META"]

AVATAR_FILE, AVATAR_META, RESUME_FILE = "avatar.pt", "avatar.json", "checkpoint.pt"
_RUNTIME_ONLY = ("device", "render_backend", "checkpoint_every")


@dataclass
class TrainResult:
    avatar_dir: Path
    reused: bool
    resumed_from: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary_text(self) -> str:
        m = self.metrics
        lines = [f"avatar: {self.avatar_dir}" + ("  (already up to date, nothing done)" if self.reused else "")]
        if self.resumed_from:
            lines.append(f"  resumed from {self.resumed_from}")
        if m:
            lines.append(f"  held-out ({m['eval_frames']} {m['eval_split']} frames): PSNR {m['psnr']:.2f} dB, "
                         f"SSIM {m['ssim']:.4f}, MS-SSIM {m['ms_ssim']:.4f}, L1 {m['l1']:.4f}"
                         + (f", LPIPS {m['lpips']:.4f}" if "lpips" in m else ""))
            if "psnr_refined" in m:
                lines.append(f"  with their poses refined by the avatar: PSNR {m['psnr_refined']:.2f} dB, "
                             f"SSIM {m['ssim_refined']:.4f} (the gap is what the tracking's pose error costs)")
            lines.append(f"  mean-image baseline: PSNR {m['baseline_psnr']:.2f} dB, SSIM {m['baseline_ssim']:.4f}")
            if "train_seconds" in m:
                lines.append(f"  trained in {m['train_seconds']:.1f} s on {m['device']} "
                             f"({m['num_gaussians']} Gaussians, {m['size']}x{m['size']})")
            lines.append(f"  check it: {self.avatar_dir / 'side_by_side.png'} and {self.avatar_dir / 'reenact_val.mp4'}")
        return "\n".join(lines)


def _head_for(tracking: Tracking, device: torch.device):
    options = from_dict(TrackerOptions, tracking.meta.get("options", {}), where="the tracking's options")
    head = load_head_model(options).to(device)
    return head, options


def train_avatar(dataset_dir: Path, tracking_dir: Path, out: Path, config: AvatarConfig | None = None, *,
                 overwrite: bool = False, lpips_weights: str = "", progress: Progress = no_progress) -> TrainResult:
    """Train an avatar of the person in ``dataset_dir`` (tracked in ``tracking_dir``) into ``out``.

    Raises:
        DatasetError: the dataset or tracking is unusable or they do not belong together.
        OutputExistsError: ``out`` holds something else (pass ``overwrite``).
    """
    config = config or AvatarConfig()
    out = Path(out).absolute()
    dataset = Dataset(dataset_dir)
    dataset.require_masks("training an avatar")
    tracking = Tracking.load(tracking_dir)
    if tracking.meta.get("identity", {}).get("dataset") != dataset.meta.get("identity"):
        raise DatasetError(f"{tracking_dir} is the tracking of another dataset than {dataset_dir}: "
                           "track this dataset (neuavatar track)")
    identity = {"dataset": dataset.meta.get("identity"), "tracking": tracking.meta.get("created"),
                "config": {k: v for k, v in to_dict(config).items() if k not in _RUNTIME_ONLY}}
    if check_output(out, identity=identity, meta_file=AVATAR_META, kind="avatar", overwrite=overwrite) == "same":
        meta = json.loads((out / AVATAR_META).read_text())
        return TrainResult(out, reused=True, metrics=meta.get("metrics", {}))

    device = resolve_device(config.device)
    head, track_options = _head_for(tracking, device)
    work = out.parent / f".{out.name}.training"
    resumed_from = None
    resume = None
    if (work / RESUME_FILE).is_file():
        try:
            resume = load_checkpoint(work / RESUME_FILE)
        except CheckpointError:
            resume = None  # a damaged leftover: start over
        if resume is not None and resume.get("identity") != identity:
            resume = None
    if resume is None and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    data = AvatarData(dataset, tracking, head, config.size, config.background, device, progress=progress)
    load_seconds = time.perf_counter() - started
    albedo = torch.from_numpy(tracking.albedo).float().div(255).to(device)
    avatar = Avatar.create(head, torch.from_numpy(tracking.arrays["shape"]), gaussians_per_triangle=config.gaussians_per_triangle,
                           offset_rank=config.offset_rank, colour_rank=config.colour_rank, albedo=albedo, seed=config.seed)
    trainer = AvatarTrainer(avatar, data, config)
    if resume is not None:
        trainer.load_state_dict(resume)
        resumed_from = f"{work / RESUME_FILE} (stage {resume['stage']}, step {resume['stage_step']})"
        if "torch" in resume.get("rng", {}):
            torch.set_rng_state(resume["rng"]["torch"])

    head_info = {"name": head.name, "head_model": track_options.head_model, "flame_landmarks": track_options.flame_landmarks,
                 "num_shape": head.num_shape, "num_expression": head.num_expression,
                 "expression_names": list(head.expression_names or ()),
                 "fingerprint": tracking.meta.get("head_model", {}).get("fingerprint")}

    rest = rest_pose(data)

    def payload(t: AvatarTrainer, final: bool = False) -> dict:
        state = t.state_dict()
        if final:
            state["optimizer"] = None
        state["rng"]["torch"] = torch.get_rng_state()
        return {**state, "config": to_dict(config), "head": head_info, "identity": identity,
                "camera": {"size": config.size, "dataset_size": dataset.size,
                           "focal_source_px": float(tracking.arrays["focal_source_px"])}, "rest": rest}

    train_started = time.perf_counter()
    state = trainer.train(progress, checkpoint=lambda t: save_checkpoint(work / RESUME_FILE, payload(t)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - train_started

    avatar.eval()
    # the training frames as the avatar saw them (refined tracking, where it was refined)
    with torch.no_grad():
        data.params = trainer.corrections(data.params, torch.arange(data.num_frames, device=device))
    avatar.set_code_range(data.params[data.train_ids.to(device)])
    lpips = None
    if lpips_weights:
        from neuavatar.metrics.lpips import load_lpips

        lpips = load_lpips(lpips_weights, device=device)
    metrics, per_frame = evaluate_avatar(avatar, data, frames=config.eval_frames, backend=config.render_backend,
                                         lpips=lpips, progress=progress, refine=tuple(config.refine),
                                         refine_steps=config.eval_refine_steps, refine_lr=config.eval_refine_lr)
    if any(config.lr_tracking):
        metrics["train_tracking_correction"] = trainer.corrections.magnitude(data.train_ids.to(device))
    metrics.update(train_seconds=train_seconds, train_seconds_total=state.seconds, load_seconds=load_seconds,
                   device=str(device), num_gaussians=len(avatar.gaussians), size=config.size,
                   steps=list(config.steps), train_frames=int(len(data.train_ids)))
    if device.type == "cuda":
        metrics["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    ids = data.val_ids if len(data.val_ids) else data.train_ids
    side_by_side(avatar, data, evenly_spaced(ids, 4), work / "side_by_side.png", backend=config.render_backend)
    loss_plot(state.history, work / "losses.png")
    if config.reenact_frames:
        reenactment_clip(avatar, data, ids[: config.reenact_frames], work / "reenact_val.mp4", dataset.fps,
                         backend=config.render_backend)
    save_checkpoint(work / AVATAR_FILE, payload(trainer, final=True))
    (work / "metrics.json").write_text(json.dumps({**metrics, "per_frame": {k: v.tolist() for k, v in per_frame.items()}},
                                                  indent=1) + "\n")
    meta = {"format": "neuavatar.avatar-dir", "version": 1, "identity": identity,
            "source": {"path": str(Path(dataset.root).absolute()), "tracking": str(Path(tracking_dir).absolute())},
            "head_model": head_info, "metrics": metrics, "config": to_dict(config),
            "tool_versions": {"neuavatar": __version__, **tool_versions("torch", "numpy")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (work / AVATAR_META).write_text(json.dumps(meta, indent=2) + "\n")
    (work / RESUME_FILE).unlink(missing_ok=True)
    replace_dir(work, out)
    return TrainResult(out, reused=False, resumed_from=resumed_from, metrics=metrics)


def rest_pose(data: AvatarData) -> dict[str, list]:
    """The person at rest, as the renderer's starting point: the median of each parameter over the
    training frames (expression, jaw, neck, eyes, rotation, translation) and of the intrinsics (at
    the training size)."""
    ids = data.train_ids.to(data.device)
    params = data.params[ids].median()
    rest = {k: getattr(params, k)[0].cpu().tolist() for k in ("expression", "jaw", "neck", "eyes", "rotation", "translation")}
    rest["intrinsics"] = data.intrinsics[ids].median(0).values.cpu().tolist()
    return rest


def load_avatar(path: Path, device: torch.device | str = "cpu", head_model: str | None = None):
    """An avatar from ``path`` (an avatar directory or its ``avatar.pt``), ready to render on ``device``.

    Args:
        head_model: the FLAME file, when the avatar was made with FLAME and the file has moved.

    Returns:
        (Avatar, checkpoint dict without the weights)

    Raises:
        CheckpointError: missing, damaged or another version; or its head model cannot be found.
    """
    path = Path(path)
    if path.is_dir():
        path = path / AVATAR_FILE
    data = load_checkpoint(path)
    info = data["head"]
    config = from_dict(AvatarConfig, data["config"], where=f"{path} config")
    options = TrackerOptions(head_model=head_model or info.get("head_model", "openhead"),
                             flame_landmarks=info.get("flame_landmarks", ""), num_shape=int(info["num_shape"]),
                             num_expression=int(info["num_expression"]))
    try:
        head = load_head_model(options).to(device)
    except (OSError, ValueError) as e:  # NeuAvatar's own errors are ValueErrors
        raise CheckpointError(f"{path}: its head model ({options.head_model}) cannot be loaded: {e}") from None
    try:
        avatar = Avatar.from_state(head, data["model"], offset_rank=config.offset_rank, colour_rank=config.colour_rank)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the weights do not fit the avatar this version builds: "
                              f"{str(e).splitlines()[0][:200]}") from None
    avatar.eval()
    return avatar, {k: v for k, v in data.items() if k not in ("model", "optimizer")}
