"""The tracker: per-frame head parameters, camera, lighting and an albedo from a dataset.

Offline (``Tracker.track_video``): every frame at once, by minimising

    E = w_l Σ ρ(|π(landmarks(θ_t)) - l_t|)                   dense landmark reprojection (robust)
      + w_p Σ |I_t - A(uv) · SH(n; L_t)|_face                 photometric, on the face
      + w_s Σ |coverage_t - face_t|                            silhouette, hair and torso ignored
      + w_v Σ |Δ² pose_t|² + w_e Σ |Δ (ψ_t, jaw_t)|²           temporal smoothness
      + priors on identity, expression and joint angles

over shared identity β, focal length f and albedo A, and per-frame expression ψ_t, jaw, neck,
eyes, head rotation and translation, and SH lighting L_t. A closed-form rigid fit starts it; the
first stage uses landmarks only, then photometric stages render coarse to fine.

Real-time (``Tracker.realtime``): one frame at a time, warm-started from the previous one,
landmarks only, for live driving.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from neuavatar.config import resolve_device
from neuavatar.dataset import LABELS, Dataset
from neuavatar.head.lbs import axis_angle_to_matrix
from neuavatar.head.model import HeadModel, HeadParams
from neuavatar.progress import Progress, no_progress
from neuavatar.render import project
from neuavatar.render.camera import model_to_camera
from neuavatar.track.adam import Adam
from neuavatar.track.cameras import CropCameras
from neuavatar.track.head_render import HeadRenderer
from neuavatar.track.init import rigid_init
from neuavatar.track.losses import acceleration, landmark_error, landmark_loss, masked_l1, silhouette_iou, velocity
from neuavatar.track.options import TrackerOptions
from neuavatar.track.shading import ambient_lighting

__all__ = ["Tracker", "TrackState", "TrackingInputs", "RealtimeTracker", "REFERENCE_SIZE", "landmarks_with_offsets"]

REFERENCE_SIZE = 512  # landmark errors are reported in pixels of a 512 x 512 crop
# Graph captures refuse unsafe CUDA calls (a synchronising copy, say) from this thread only: in the
# renderer service other threads render and copy frames to the host while a driver is tracked.
_CAPTURE_MODE = "thread_local"
_FACE_LABELS = [LABELS.index(n) for n in ("face_skin", "eyes", "mouth_interior", "lips")]
_IGNORED_LABELS = [LABELS.index(n) for n in ("hair", "neck_torso")] + [255]


class TrackingInputs:
    """What the tracker uses of a dataset, on the tracking device; images are loaded per size."""

    def __init__(self, dataset: Dataset | None, device: torch.device):
        self.dataset, self.device = dataset, device
        if dataset is None:  # see from_landmarks
            return
        self.size = dataset.size
        self.landmarks = torch.from_numpy(np.nan_to_num(dataset.landmarks)).float().to(device)  # (T, 478, 3)
        self.valid = torch.from_numpy(dataset.valid).to(device)
        src = dataset.meta["source"]
        self.cameras = CropCameras(torch.from_numpy(dataset.crop_to_source).float(), (src["width"], src["height"]),
                                   dataset.size).to(device)
        self._images: dict[int, tuple[Tensor, Tensor]] = {}

    @classmethod
    def from_landmarks(cls, landmarks: Tensor, size: int, device: torch.device) -> TrackingInputs:
        """Inputs without a dataset, for the landmark stage only: (T, 478, 3) landmarks in pixels of
        ``size``² frames that are the whole source image (no crop)."""
        inputs = cls(None, device)
        inputs.size = size
        inputs.landmarks = landmarks.float().to(device)
        inputs.valid = torch.ones(len(landmarks), dtype=torch.bool, device=device)
        whole = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(landmarks), 2, 3)
        inputs.cameras = CropCameras(whole, (size, size), size).to(device)
        inputs._images = {}
        return inputs

    @property
    def num_frames(self) -> int:
        return len(self.valid)

    def images(self, size: int) -> tuple[Tensor, Tensor]:
        """(T, size, size, 3) uint8 frames and (T, size, size) uint8 labels, resized, on the device."""
        if self.dataset is None:
            raise ValueError("these tracking inputs hold landmarks only (no dataset, no images)")
        if size not in self._images:
            frames = self.dataset.resized(size, ("image", "labels"))
            imgs, labs = (torch.from_numpy(frames[k]).to(self.device) for k in ("image", "labels"))
            self._images = {size: (imgs, labs)}  # keep one size: the stages go coarse to fine
        return self._images[size]


class TrackState(nn.Module):
    """Everything the tracker fits, as parameters: shared identity, focal length, albedo, and per
    frame expression, joints, rigid pose and lighting."""

    def __init__(self, model: HeadModel, num_frames: int, texture_size: int, device: torch.device):
        super().__init__()
        z = lambda *s: nn.Parameter(torch.zeros(*s, device=device))  # noqa: E731
        self.shape = z(1, model.num_shape)
        self.log_focal = z(())
        self.expression = z(num_frames, model.num_expression)
        self.jaw = z(num_frames, 3)
        self.neck = z(num_frames, 3)
        self.eyes = z(num_frames, 2, 3)
        self.rotation = z(num_frames, 3)
        self.translation = z(num_frames, 3)
        self.lighting = nn.Parameter(ambient_lighting(num_frames, device))
        self.albedo = nn.Parameter(torch.full((1, texture_size, texture_size, 3), 0.6, device=device))
        # This person's correction of where the landmarks sit on the mesh (metres, the head's frame):
        # the embedding was registered once on the model's own renderings.
        self.landmark_offsets = z(478, 3)

    def head(self, frames: Tensor | slice = slice(None)) -> HeadParams:
        """The head parameters of ``frames`` (an index tensor or slice)."""
        rotation = self.rotation[frames]
        return HeadParams(shape=self.shape.expand(len(rotation), -1), expression=self.expression[frames],
                          jaw=self.jaw[frames], neck=self.neck[frames], eyes=self.eyes[frames], rotation=rotation,
                          translation=self.translation[frames])


@dataclass
class TrackResult:
    """The fitted state, its metrics and the loss history."""

    state: TrackState
    metrics: dict[str, float]
    per_frame: dict[str, np.ndarray]  # (T,) arrays: landmark error, silhouette IoU
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Tracker:
    """Fits a :class:`HeadModel` to datasets (offline) or to a stream of landmarks (real-time)."""

    def __init__(self, model: HeadModel, options: TrackerOptions, device: torch.device):
        self.model = model.to(device)
        self.options = options
        self.device = device
        self.renderer = HeadRenderer(self.model)
        self._landmark_ids = self.model.landmark_vertices()
        weights = torch.ones(478, device=device)
        weights[[10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
                 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]] = 0.5  # face outline
        self._landmark_weights = weights

    @classmethod
    def create_from_options(cls, options: TrackerOptions | None = None) -> Tracker:
        """Load the head model the options name and pick the device."""
        from neuavatar.track.models import load_head_model

        options = options or TrackerOptions()
        return cls(load_head_model(options), options, resolve_device(options.device))

    # --- offline -------------------------------------------------------------------------------

    def track_video(self, dataset: Dataset, progress: Progress = no_progress) -> TrackResult:
        """Track every frame of ``dataset``."""
        started = time.perf_counter()
        opt = self.options
        inputs = TrackingInputs(dataset, self.device)
        state = TrackState(self.model, inputs.num_frames, opt.texture_size, self.device)
        state.log_focal.data.fill_(math.log(opt.focal_init))
        self._rigid_init(state, inputs)
        total = opt.landmark_steps + sum(opt.photometric_steps)
        history: list[dict[str, float]] = []
        step = 0

        def report(losses: dict[str, Tensor]) -> None:
            nonlocal step
            step += 1
            if step % 10 == 0 or step == total:
                history.append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
                progress("track", step, total)

        self._fit_landmarks(state, inputs, opt.landmark_steps, report)

        generator = torch.Generator(device="cpu").manual_seed(opt.seed)
        valid_frames = inputs.valid.nonzero()[:, 0].cpu()
        for steps, size in zip(opt.photometric_steps, opt.photometric_sizes):
            size = min(size, inputs.size)
            images, labels = inputs.images(size)
            if step == opt.landmark_steps:
                self._init_albedo(state, images, labels)
            optimizer = self._optimizer(state, photometric=True)
            for _ in range(steps):
                pick = valid_frames[torch.randperm(len(valid_frames), generator=generator)[: opt.batch_frames]]
                losses = self._landmark_energy(state, inputs)
                losses.update(self._image_energy(state, inputs, pick.to(self.device), images, labels, size))
                self._step(optimizer, losses)
                report(losses)

        metrics, per_frame = self.evaluate(state, inputs)
        return TrackResult(state=state, metrics=metrics, per_frame=per_frame, history=history,
                           seconds=time.perf_counter() - started)

    def track_landmarks(self, dataset: Dataset | TrackingInputs, steps: int | None = None,
                        progress: Progress = no_progress) -> TrackResult:
        """Every frame of ``dataset`` from its landmarks alone: the offline tracking's first stage
        (landmarks, temporal smoothness and priors over all frames at once; identity, focal length and
        landmark offsets fitted too), ``steps`` (default ``landmark_steps``) of it. What a driving
        video needs: on a GPU a fraction of a second for 250 frames, and far closer to the landmarks
        than the real-time mode, which sees one frame at a time."""
        opt = self.options
        steps = opt.landmark_steps if steps is None else steps
        inputs = dataset if isinstance(dataset, TrackingInputs) else TrackingInputs(dataset, self.device)
        state = TrackState(self.model, inputs.num_frames, 16, self.device)  # no albedo is fitted here
        state.log_focal.data.fill_(math.log(opt.focal_init))
        self._rigid_init(state, inputs)
        done = 0

        def report(losses: dict[str, Tensor]) -> None:
            nonlocal done
            done += 1
            if done % 10 == 0 or done == steps:
                progress("track", done, steps)

        started = time.perf_counter()
        self._fit_landmarks(state, inputs, steps, report)
        error = self.landmark_errors(state, inputs)
        valid = inputs.valid
        metrics = {"landmark_error_px": float(error[valid].mean()) if valid.any() else float("nan"),
                   "frames": int(inputs.num_frames), "valid_frames": int(valid.sum())}
        return TrackResult(state=state, metrics=metrics, per_frame={"landmark_error_px": error.cpu().numpy()},
                           seconds=time.perf_counter() - started)

    def warm_up(self, frames: int = 8, size: int = 256) -> None:
        """Track a few synthetic frames (the model's own neutral landmarks, 60 cm from the camera)
        with :meth:`track_landmarks`: on CUDA a process's first fit pays seconds for loading kernels
        and libraries and capturing graphs; this pays them now, e.g. while a driving video is being
        preprocessed."""
        with torch.no_grad():
            neutral = self.model(self.model.zero_params(1))
            points = self.model.landmarks(neutral.vertices)[0] + torch.tensor([0.0, 0.0, -0.6], device=self.device)
            camera = model_to_camera(points)
            pixels = project(camera[None], torch.tensor([[size, size, size / 2, size / 2]], device=self.device))[0]
            depth = (camera[:, 2] - camera[:, 2].mean()) * size / camera[:, 2].mean()  # as MediaPipe's z
            landmarks = torch.cat([pixels, depth[:, None]], -1).expand(frames, -1, -1)
        with torch.enable_grad():
            self.track_landmarks(TrackingInputs.from_landmarks(landmarks, size, self.device), steps=25)

    def _fit_landmarks(self, state: TrackState, inputs: TrackingInputs, steps: int,
                       report: Callable[[dict[str, Tensor]], None], chunk: int = 10) -> None:
        """``steps`` Adam steps on the landmark energy. On CUDA, ``chunk`` steps are captured once in
        a CUDA graph and replayed (hundreds of small kernels per step, so launching them one by one
        would cost more than running them). ``report`` is called after every step, with graphs with
        the losses of its chunk's last step."""
        cuda = self.device.type == "cuda" and steps >= 2 * chunk
        optimizer = self._optimizer(state, photometric=False)
        if not cuda:
            for _ in range(steps):
                losses = self._landmark_energy(state, inputs)
                self._step(optimizer, losses)
                report(losses)
            return

        def run(n: int) -> dict[str, Tensor]:
            for _ in range(n):  # gradients zeroed in place: a captured graph reads their buffers
                losses = self._landmark_energy(state, inputs)
                self._step(optimizer, losses, set_to_none=False)
            return losses

        def report_steps(n: int, losses: dict[str, Tensor]) -> None:
            for _ in range(n):
                report(losses)

        # The first chunk runs eagerly on a side stream (graphs need a warm-up, which also makes the
        # gradients' buffers), the second is captured, and replays run every later full chunk.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            report_steps(chunk, run(chunk))
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode=_CAPTURE_MODE):
            captured = run(chunk)
        for _ in range((steps - chunk) // chunk):
            graph.replay()
            report_steps(chunk, captured)
        left = (steps - chunk) % chunk
        if left:
            report_steps(left, run(left))
        optimizer.zero_grad(set_to_none=True)

    def _optimizer(self, state: TrackState, photometric: bool) -> Adam:
        lr = self.options.learning_rate
        # The photometric stages refine the frames (a random subset renders at each step, which
        # would otherwise shake them) while the shared identity, albedo and lighting learn.
        frame_lr = lr * (self.options.photometric_frame_lr if photometric else 1.0)
        groups = [
            {"params": [state.expression, state.jaw, state.neck, state.eyes, state.rotation], "lr": frame_lr},
            {"params": [state.translation], "lr": frame_lr * 0.05},
            {"params": [state.shape, state.log_focal], "lr": lr * 0.5},
            {"params": [state.landmark_offsets], "lr": lr * 0.02},  # metres: steps of 0.2 mm
        ]
        if photometric:
            groups += [{"params": [state.lighting], "lr": lr}, {"params": [state.albedo], "lr": lr}]
        return Adam(groups)

    @staticmethod
    def _step(optimizer: Adam, losses: dict[str, Tensor], set_to_none: bool = True) -> None:
        optimizer.zero_grad(set_to_none=set_to_none)
        losses["total"] = sum(v for k, v in losses.items() if k.startswith("w_"))
        losses["total"].backward()
        optimizer.step()

    def _rigid_init(self, state: TrackState, inputs: TrackingInputs) -> None:
        with torch.no_grad():
            neutral = self.model(self.model.zero_params(1))
            model_points = self.model.landmarks(neutral.vertices)[0]
            frames = torch.arange(inputs.num_frames, device=self.device)
            k = inputs.cameras.intrinsics(state.log_focal, frames, inputs.size)
            rotation, translation = rigid_init(model_points, neutral.joints[0, 0], inputs.landmarks, k)
            valid = inputs.valid
            if valid.any() and not valid.all():  # frames without landmarks take their neighbours' pose
                t = frames.float()
                for values in (rotation, translation):
                    for c in range(3):
                        values[:, c] = torch.from_numpy(np.interp(t.cpu().numpy(), t[valid].cpu().numpy(),
                                                                  values[valid, c].cpu().numpy())).to(values)
            state.rotation.data.copy_(rotation)
            state.translation.data.copy_(translation)

    def project_landmarks(self, state: TrackState, cameras: CropCameras, frames: Tensor, size: int) -> Tensor:
        """(B, 478, 2) model landmarks of ``frames`` projected into ``size`` x ``size`` crops."""
        params = state.head(frames)
        points = landmarks_with_offsets(self.model, params, state.landmark_offsets, self._landmark_ids)
        return project(model_to_camera(points), cameras.intrinsics(state.log_focal, frames, size))

    def _landmark_energy(self, state: TrackState, inputs: TrackingInputs) -> dict[str, Tensor]:
        opt = self.options
        frames = torch.arange(inputs.num_frames, device=self.device)
        projected = self.project_landmarks(state, inputs.cameras, frames, inputs.size)
        error = landmark_error(projected, inputs.landmarks[..., :2], REFERENCE_SIZE / inputs.size)
        pose = torch.cat([state.rotation, state.translation * 10, state.neck], -1)  # translation in decimetres
        return {
            "w_landmarks": opt.w_landmarks * landmark_loss(error, inputs.valid, self._landmark_weights),
            "w_smooth_pose": opt.w_smooth_pose * acceleration(pose),
            "w_smooth_expression": opt.w_smooth_expression * (velocity(state.expression) + velocity(state.jaw)
                                                              + velocity(state.eyes)),
            "w_shape_prior": opt.w_shape_prior * state.shape.pow(2).mean(),
            "w_expression_prior": opt.w_expression_prior * state.expression.pow(2).mean(),
            "w_joint_prior": opt.w_joint_prior * (state.jaw.pow(2).mean() + state.neck.pow(2).mean()
                                                  + 0.1 * state.eyes.pow(2).mean()),
            "w_landmark_offsets": opt.w_landmark_offsets * (state.landmark_offsets * 1000).pow(2).mean(),  # per mm²
            "landmark_px": (error * inputs.valid[:, None]).sum().detach() / (inputs.valid.sum() * 478).clamp_min(1),
        }

    def _image_energy(self, state: TrackState, inputs: TrackingInputs, frames: Tensor, images: Tensor,
                      labels: Tensor, size: int) -> dict[str, Tensor]:
        opt = self.options
        head = self.model(state.head(frames))
        k = inputs.cameras.intrinsics(state.log_focal, frames, size)
        out = self.renderer(head.vertices, k, size, albedo=state.albedo, lighting=state.lighting[frames])
        target = images[frames].float() / 255
        lab = labels[frames].long()
        face = torch.isin(lab, torch.tensor(_FACE_LABELS, device=self.device))
        ignore = torch.isin(lab, torch.tensor(_IGNORED_LABELS, device=self.device))
        on_face = (face & (out.rast[..., 3] > 0)).float()[..., None]
        photometric = masked_l1(out.color, target, on_face)
        keep = (~ignore).float()[..., None]
        silhouette = ((out.mask - face.float()[..., None]).abs() * keep).mean()
        return {"w_photometric": opt.w_photometric * photometric, "w_silhouette": opt.w_silhouette * silhouette}

    def _init_albedo(self, state: TrackState, images: Tensor, labels: Tensor) -> None:
        """Start the albedo at the mean colour of the face skin."""
        skin = labels == LABELS.index("face_skin")
        colour = (images.float() / 255)[skin].mean(0) if skin.any() else torch.full((3,), 0.6, device=self.device)
        state.albedo.data[:] = colour

    # --- metrics -------------------------------------------------------------------------------

    @torch.no_grad()
    def landmark_errors(self, state: TrackState, inputs: TrackingInputs, projected: Tensor | None = None) -> Tensor:
        """(T,) mean distance of each frame's fitted landmarks from its detected ones, in pixels at 512²
        (``projected``: the fitted landmarks, (T, 478, 2), when the caller has them already)."""
        if projected is None:
            frames = torch.arange(inputs.num_frames, device=self.device)
            projected = self.project_landmarks(state, inputs.cameras, frames, inputs.size)
        return landmark_error(projected, inputs.landmarks[..., :2], REFERENCE_SIZE / inputs.size).mean(-1)

    @torch.no_grad()
    def evaluate(self, state: TrackState, inputs: TrackingInputs, iou_size: int = 256) -> tuple[dict, dict]:
        """Landmark error (px at 512x512), face-silhouette IoU and jitter, over the valid frames."""
        frames = torch.arange(inputs.num_frames, device=self.device)
        scale = REFERENCE_SIZE / inputs.size
        projected = self.project_landmarks(state, inputs.cameras, frames, inputs.size)
        detected = inputs.landmarks[..., :2]
        error = self.landmark_errors(state, inputs, projected)
        valid = inputs.valid
        size = min(iou_size, inputs.size)
        _, labels = inputs.images(size)
        ious = torch.full((inputs.num_frames,), float("nan"), device=self.device)
        for chunk in frames[valid].split(64):
            head = self.model(state.head(chunk))
            k = inputs.cameras.intrinsics(state.log_focal, chunk, size)
            out = self.renderer(head.vertices, k, size)
            lab = labels[chunk].long()
            ious[chunk] = silhouette_iou(out.rast[..., 3] > 0,
                                         torch.isin(lab, torch.tensor(_FACE_LABELS, device=self.device)),
                                         torch.isin(lab, torch.tensor(_IGNORED_LABELS, device=self.device)))
        jitter_fit = _jitter(projected * scale, valid)
        jitter_raw = _jitter(detected * scale, valid)
        metrics = {
            "landmark_error_px": float(error[valid].mean()),
            "landmark_error_median_px": float(error[valid].median()),
            "silhouette_iou": float(ious[valid].mean()),
            "jitter_px_per_frame2": jitter_fit,
            "detector_jitter_px_per_frame2": jitter_raw,
            "focal_source_px": float(inputs.cameras.focal_source(state.log_focal)),
            "frames": int(inputs.num_frames),
            "valid_frames": int(valid.sum()),
        }
        return metrics, {"landmark_error_px": error.cpu().numpy(), "silhouette_iou": ious.cpu().numpy()}

    # --- real time -----------------------------------------------------------------------------

    def realtime(self, image_size: int, focal_px: float, shape: Tensor | None = None,
                 landmark_offsets: Tensor | None = None) -> RealtimeTracker:
        """A session that tracks one frame at a time (see :class:`RealtimeTracker`)."""
        return RealtimeTracker(self, image_size, focal_px, shape, landmark_offsets)


def landmarks_with_offsets(model: HeadModel, params: HeadParams, offsets: Tensor | None, ids: Tensor) -> Tensor:
    """(B, 478, 3) posed landmarks, each moved by its person-specific offset (478, 3) turned with the
    head (the root and neck rotations); computed from the landmark-carrying vertices ``ids`` only."""
    head = model(params, vertex_ids=ids)
    points = model.landmarks_from_subset(head.vertices, ids)
    if offsets is None:
        return points
    turn = axis_angle_to_matrix(params.rotation) @ axis_angle_to_matrix(params.neck)  # (B, 3, 3)
    return points + torch.einsum("bij,lj->bli", turn, offsets)


def _jitter(points: Tensor, valid: Tensor) -> float:
    """Mean |x_{t+1} - 2 x_t + x_{t-1}| of (T, L, 2) points over triplets of valid frames."""
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    if not ok.any():
        return float("nan")
    acc = torch.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], dim=-1).mean(-1)
    return float(acc[ok].mean())


class RealtimeTracker:
    """Tracks a live stream of landmarks, one frame at a time (MediaPipe's ``detect_for_video``).

    Each frame starts from the previous frame's answer and takes a few optimisation steps on the
    landmark energy plus a pull towards the previous frame. Identity, focal length and the person's
    landmark offsets are fixed (from an offline tracking, or the mean face). On CUDA the steps are
    captured once into a CUDA graph and replayed for every frame: the work is small, so launching
    it kernel by kernel would cost more than doing it.
    """

    def __init__(self, tracker: Tracker, image_size: int, focal_px: float, shape: Tensor | None = None,
                 landmark_offsets: Tensor | None = None):
        self.tracker = tracker
        self.model = tracker.model
        self.size = image_size
        dev = tracker.device
        self.intrinsics = torch.tensor([[focal_px, focal_px, image_size / 2, image_size / 2]], device=dev)
        self.params = self.model.zero_params(1)
        if shape is not None:
            self.params.shape = shape.reshape(1, -1).to(dev, torch.float32)
        self.offsets = None if landmark_offsets is None else landmark_offsets.to(dev, torch.float32)
        self._free = ["expression", "jaw", "neck", "eyes", "rotation", "translation"]
        for name in self._free:
            setattr(self.params, name, getattr(self.params, name).clone().requires_grad_(True))
        cuda = dev.type == "cuda"
        self._optimizer = Adam([{"params": [getattr(self.params, n) for n in self._free], "lr": 0.02}])
        # Inputs of the steps, kept at fixed addresses so that a captured graph reads them.
        self._detected = torch.zeros(1, 478, 2, device=dev)
        self._previous = {n: getattr(self.params, n).detach().clone() for n in self._free}
        self._pull = torch.zeros((), device=dev)  # 0 on the first frame: nothing to be pulled towards
        self._graph: torch.cuda.CUDAGraph | None = None
        self._use_graph = cuda
        self._started = False
        self._last_ms: int | None = None

    def _energy(self) -> Tensor:
        tr = self.tracker
        points = landmarks_with_offsets(self.model, self.params, self.offsets, tr._landmark_ids)
        projected = project(model_to_camera(points), self.intrinsics)
        error = landmark_error(projected, self._detected, REFERENCE_SIZE / self.size)
        loss = landmark_loss(error, torch.ones(1, dtype=torch.bool, device=tr.device), tr._landmark_weights)
        loss = loss + tr.options.w_expression_prior * self.params.expression.pow(2).mean()
        loss = loss + tr.options.w_joint_prior * (self.params.jaw.pow(2).mean() + self.params.neck.pow(2).mean())
        pull = sum((getattr(self.params, n) - self._previous[n]).pow(2).sum() for n in self._free)
        return loss + 0.5 * self._pull * pull

    def _steps(self) -> None:
        for _ in range(self.tracker.options.realtime_steps):
            self._optimizer.zero_grad(set_to_none=False)
            self._energy().backward()
            self._optimizer.step()

    def _capture(self) -> None:
        """Warm up on a side stream (as CUDA graphs require), capture the steps, then put the
        parameters and Adam's state back as they were: replaying starts from the same place as
        running the steps eagerly would."""
        saved = {n: getattr(self.params, n).detach().clone() for n in self._free}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._steps()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph, capture_error_mode=_CAPTURE_MODE):
            self._steps()
        with torch.no_grad():
            for n in self._free:
                getattr(self.params, n).copy_(saved[n])
            self._optimizer.reset()

    def track_frame(self, landmarks: Tensor, timestamp_ms: int) -> HeadParams:
        """Head parameters for one frame.

        Args:
            landmarks: (478, 3) MediaPipe landmarks in pixels of the ``image_size`` image (z: depth).
            timestamp_ms: the frame's time; must increase from call to call.

        Raises:
            ValueError: for landmarks of the wrong shape or a timestamp that goes back.
        """
        if tuple(landmarks.shape) != (478, 3):
            raise ValueError(f"landmarks must be (478, 3), got {tuple(landmarks.shape)}")
        if self._last_ms is not None and timestamp_ms <= self._last_ms:
            raise ValueError(f"timestamp_ms must increase: {timestamp_ms} after {self._last_ms}")
        self._last_ms = timestamp_ms
        detected = landmarks.to(self.tracker.device, torch.float32)
        self._detected.copy_(detected[None, :, :2])
        if not self._started:  # the first frame: a closed-form pose, nothing to pull towards
            with torch.no_grad():
                neutral = self.model.zero_params(1)
                neutral.shape = self.params.shape.detach()
                rest = self.model(neutral)
                rot, trans = rigid_init(self.model.landmarks(rest.vertices)[0], rest.joints[0, 0], detected[None],
                                        self.intrinsics)
                self.params.rotation.copy_(rot)
                self.params.translation.copy_(trans)
        rounds = 1 if self._started else self.tracker.options.realtime_warmup
        if self._use_graph and self._graph is None:
            self._capture()
        for _ in range(max(1, rounds)):
            if self._use_graph:
                self._graph.replay()
            else:
                self._steps()
        with torch.no_grad():
            for n in self._free:
                self._previous[n].copy_(getattr(self.params, n))
            self._pull.fill_(1.0)
        self._started = True
        return self.params.detach().clone()  # the session goes on updating its own tensors in place
