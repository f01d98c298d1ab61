"""Staged optimisation of an avatar: geometry, appearance, joint (as Neural Head Avatars).

Per step, a random batch of training frames with their tracked head parameters:

    geometry     E = w_sil |cov(mesh) - M| + w_hair Σ_hair (1 - cov) + mesh terms
    appearance   E = w_l1 ω|I - Î| + w_ssim (1 - SSIM(I, Î)) / 2 + w_sil |α - M| + w_hair Σ_hair (1 - α)
                   + Gaussian terms                                   (the mesh is frozen)
    joint        both, every part learning

Where ``lr_tracking`` is set, each training frame's tracked parameters θ_t are corrected by a
learned Δ_t in that stage (``neuavatar.avatar.refine``).

    mesh terms      w_lap |L δ|² + w_normal (1 - n_f · n_g) + w_offset |δ|² (face weighted)
    Gaussian terms  w_position relu(|p| - 1)² + w_scale relu(s - s_max)² + w_opacity H(o)

with ω = ``mouth_weight`` on the lips and mouth interior (1 elsewhere), M the avatar mask (the
person above the neck cut), cov the mesh's antialiased coverage (cut too), Î the target composited
over the background. Weights are per stage; silhouette, hair and Laplacian weights follow schedules
over epochs (``AvatarConfig``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from neuavatar.avatar.config import STAGES, AvatarConfig, schedule_value
from neuavatar.avatar.cut import cut_mask
from neuavatar.avatar.data import AvatarData, Batch
from neuavatar.avatar.mesh import adjacent_faces, head_turn, laplacian, normal_consistency_loss, uniform_laplacian_loss
from neuavatar.avatar.model import Avatar, mesh_coverage
from neuavatar.avatar.refine import FrameCorrections
from neuavatar.metrics.image import dssim_loss
from neuavatar.progress import Progress, no_progress
from neuavatar.render import model_to_camera

__all__ = ["AvatarTrainer", "TrainState"]


@dataclass
class TrainState:
    """Where training is: ``stage`` 0..2 (3: done), steps done in it, frames seen in all, history."""

    stage: int = 0
    stage_step: int = 0
    frames_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class AvatarTrainer:
    """Trains ``avatar`` on ``data`` with ``config``; resumable at any step through :meth:`state_dict`."""

    def __init__(self, avatar: Avatar, data: AvatarData, config: AvatarConfig):
        self.avatar, self.data, self.config = avatar, data, config
        head = avatar.head
        self.faces = head.faces
        self.lap = laplacian(head.faces, head.num_vertices)
        self.adjacent = adjacent_faces(head.faces)
        # The tracker fitted the face to the landmarks already: offsets there cost ten times more.
        face = head.regions.get("face")
        weight = torch.ones(head.num_vertices, device=data.device)
        if face is not None:
            weight[face.to(data.device).bool()] = 10.0
        self.offset_weight = weight
        # per-frame corrections of the tracking, for every frame (only training frames' ever move)
        self.corrections = FrameCorrections(data.params, tuple(config.refine)).to(data.device)
        self.state = TrainState()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self._order: Tensor = torch.empty(0, dtype=torch.long)

    # --- optimisation ----------------------------------------------------------------------------

    def _make_optimizer(self, stage: int) -> torch.optim.Optimizer:
        """Adam over the parts that learn in ``stage`` (a learning rate of 0 freezes a part)."""
        c, a, g = self.config, self.avatar, self.avatar.gaussians
        groups = [
            ("lr_offsets", [p for n, p in a.offsets.named_parameters() if n != "pose_to_offsets"]),
            ("lr_pose_offsets", [a.offsets.pose_to_offsets]),
            ("lr_position", [g.position]),
            ("lr_colour", [g.colour_logit] + ([g.code_to_colour, g.colour_basis] if g.colour_rank else [])),
            ("lr_opacity", [g.opacity_logit]),
            ("lr_scale", [g.log_scale]),
            ("lr_rotation", [g.rotation]),
        ]
        if c.stage("lr_tracking", stage) > 0:
            groups.append(("lr_tracking", list(self.corrections.parameters())))
        for p in [*a.parameters(), *self.corrections.parameters()]:
            p.requires_grad_(False)
        params = []
        for name, ps in groups:
            lr = c.stage(name, stage)
            if lr > 0:
                for p in ps:
                    p.requires_grad_(True)
                # Gaussians take 3DGS's tiny epsilon; the tracking's corrections see a few noisy
                # gradients per epoch, which that epsilon would turn into full-size random steps
                params.append({"params": ps, "lr": lr, "name": name, "eps": 1e-8 if name == "lr_tracking" else 1e-15})
        fused = self.data.device.type == "cuda"
        return torch.optim.Adam(params, eps=1e-15, fused=fused) if params else torch.optim.SGD([torch.zeros(1)], lr=0)

    def _next_ids(self, batch_size: int) -> Tensor:
        """The next ``batch_size`` training frames of a shuffled pass (reshuffled when used up)."""
        ids = self.data.train_ids
        if len(self._order) < batch_size:
            more = ids[torch.randperm(len(ids), generator=self.generator)]
            while len(more) < batch_size:  # fewer frames than a batch: repeat them
                more = torch.cat([more, ids[torch.randperm(len(ids), generator=self.generator)]])
            self._order = torch.cat([self._order, more])
        out, self._order = self._order[:batch_size], self._order[batch_size:]
        return out

    @property
    def epoch(self) -> float:
        return self.state.frames_seen / len(self.data.train_ids)

    def losses(self, stage: int, batch: Batch) -> tuple[dict[str, Tensor], Tensor | None]:
        """The weighted loss terms (keys ``w_*``) and monitors of one step; also the render's colour."""
        c, epoch = self.config, self.epoch
        out: dict[str, Tensor] = {}
        colour = None
        w_sil = schedule_value(c.w_silhouette, epoch)
        w_hair = schedule_value(c.w_semantic_hair, epoch)
        hair_pixels = batch.hair.sum().clamp_min(1)
        params = self.corrections(batch.params, batch.ids)
        if stage == 0:
            vertices, offsets = self.avatar.mesh(params)
            ring = model_to_camera(self.avatar.ring(vertices, offsets, head_turn(params))).detach()  # fixed: see splat
            cover = mesh_coverage(vertices, self.faces, batch.intrinsics, self.data.size) * \
                cut_mask(ring, batch.intrinsics, self.data.size)
            out["w_silhouette"] = w_sil * (cover - batch.mask).abs().mean()
            out["w_semantic_hair"] = w_hair * ((1 - cover) * batch.hair).sum() / hair_pixels
        else:
            render = self.avatar(params, batch.intrinsics, self.data.size, self.data.background,
                                 backend=c.render_backend)
            colour, vertices, offsets = render.colour, render.vertices, render.offsets
            pixel_weight = 1 + (c.mouth_weight - 1) * batch.mouth
            out["w_l1"] = c.stage("w_l1", stage) * ((colour - batch.target).abs() * pixel_weight).mean()
            if c.stage("w_ssim", stage):
                out["w_ssim"] = c.stage("w_ssim", stage) * dssim_loss(colour, batch.target)
            out["w_silhouette"] = w_sil * (render.alpha - batch.mask).abs().mean()
            out["w_semantic_hair"] = w_hair * ((1 - render.alpha) * batch.hair).sum() / hair_pixels
            g = self.avatar.gaussians
            out["w_position"] = c.stage("w_position", stage) * torch.relu(g.position.norm(dim=-1) - 1).pow(2).mean()
            out["w_scale"] = c.stage("w_scale", stage) * torch.relu(g.log_scale.exp() - c.max_scale).pow(2).mean()
            if c.stage("w_opacity", stage):
                o = torch.sigmoid(g.opacity_logit).clamp(1e-4, 1 - 1e-4)
                out["w_opacity"] = c.stage("w_opacity", stage) * -(o * o.log() + (1 - o) * (1 - o).log()).mean()
            with torch.no_grad():
                mse = (colour - batch.target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
                out["psnr"] = (-10 * torch.log10(mse)).mean()
        if stage != 1:  # the mesh learns: keep it smooth and close to the head model
            out["w_laplacian"] = schedule_value(c.w_laplacian, epoch) * uniform_laplacian_loss(self.lap, offsets)
            out["w_normal"] = c.stage("w_normal", stage) * normal_consistency_loss(vertices, self.faces, self.adjacent)
            out["w_offset"] = c.stage("w_offset", stage) * ((offsets * 100).pow(2).sum(-1) * self.offset_weight).mean()
        return out, colour

    def train(self, progress: Progress = no_progress, checkpoint: Callable[[AvatarTrainer], None] | None = None
              ) -> TrainState:
        """Run (or resume) every stage to its end; ``checkpoint(self)`` is called every
        ``checkpoint_every`` steps and at the end of each stage."""
        c, st = self.config, self.state
        started = time.perf_counter() - st.seconds
        while st.stage < len(STAGES):
            stage, total = st.stage, c.steps[st.stage]
            if self.optimizer is None:
                self.optimizer = self._make_optimizer(stage)
            name = STAGES[stage]
            while st.stage_step < total:
                batch = self.data.batch(self._next_ids(c.batch_size[stage]))
                losses, _ = self.losses(stage, batch)
                loss = sum(v for k, v in losses.items() if k.startswith("w_"))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                st.stage_step += 1
                st.frames_seen += len(batch.ids)
                if st.stage_step % 25 == 0 or st.stage_step == total:
                    record = {"stage": stage, "step": st.stage_step, "epoch": self.epoch, "loss": float(loss.detach()),
                              **{k: float(v.detach()) for k, v in losses.items()}}
                    if not all(math.isfinite(v) for v in record.values()):
                        raise FloatingPointError(f"training diverged in the {name} stage at step {st.stage_step}: "
                                                 f"{record}")
                    st.history.append(record)
                    info = {"loss": record["loss"]}
                    if "psnr" in record:
                        info["psnr"] = record["psnr"]
                    progress(name, st.stage_step, total, info)
                if checkpoint is not None and st.stage_step % c.checkpoint_every == 0 and st.stage_step < total:
                    st.seconds = time.perf_counter() - started
                    checkpoint(self)
            st.stage += 1
            st.stage_step = 0
            self.optimizer = None
            st.seconds = time.perf_counter() - started
            if checkpoint is not None:
                checkpoint(self)
        return st

    # --- resuming ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        st = self.state
        return {
            "model": self.avatar.state_dict(),
            "corrections": self.corrections.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "stage": st.stage, "stage_step": st.stage_step, "frames_seen": st.frames_seen,
            "seconds": st.seconds, "history": st.history,
            "rng": {"sampler": self.generator.get_state(), "order": self._order.clone()},
        }

    def load_state_dict(self, data: dict) -> None:
        """Continue from a checkpoint written by :meth:`state_dict` (the avatar's weights included)."""
        self.avatar.load_state_dict(data["model"])
        if "corrections" in data:
            self.corrections.load_state_dict(data["corrections"])
        st = self.state
        st.stage, st.stage_step = int(data["stage"]), int(data["stage_step"])
        st.frames_seen, st.seconds = int(data.get("frames_seen", 0)), float(data.get("seconds", 0.0))
        st.history = list(data.get("history", []))
        rng = data.get("rng") or {}
        if "sampler" in rng:
            self.generator.set_state(rng["sampler"])
            self._order = rng["order"].long()
        self.optimizer = None
        if st.stage < len(STAGES) and data.get("optimizer") is not None:
            self.optimizer = self._make_optimizer(st.stage)
            self.optimizer.load_state_dict(data["optimizer"])
