"""The tracker: rigid initialisation, offline tracking of real video, real-time mode, bad input."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from neuavatar import Dataset, DatasetError, InputError, PreprocessConfig, preprocess_video
from neuavatar.head import load_openhead
from neuavatar.render import model_to_camera, project
from neuavatar.track import Tracker, TrackerOptions, Tracking, track_dataset
from neuavatar.track.init import matrix_to_axis_angle, rigid_init
from neuavatar.track.tracker import landmarks_with_offsets

from conftest import ANCHOR

pytestmark = pytest.mark.slow

# What CI affords on 2 CPU cores: the landmark stage and one photometric stage at 128 px.
SMOKE = TrackerOptions(device="cpu", landmark_steps=200, photometric_steps=(60,), photometric_sizes=(128,),
                       batch_frames=16, texture_size=128)


@pytest.fixture(scope="module")
def head():
    return load_openhead()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, make_clip):
    out = tmp_path_factory.mktemp("trk") / "ds"
    clip = make_clip(ANCHOR, 64, 256)
    return preprocess_video(clip, out, PreprocessConfig(size=128, min_frames=10, workers=2)).dataset_dir


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, dataset_dir):
    out = tmp_path_factory.mktemp("trk") / "tracking"
    return track_dataset(dataset_dir, out, SMOKE)


def test_axis_angle_round_trip():
    from neuavatar.head.lbs import axis_angle_to_matrix

    r = torch.tensor([[0.1, -0.2, 0.05], [0.0, 2.5, 0.3], [1e-7, 0.0, 0.0]])
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(r)), r, rtol=0, atol=1e-5)


def test_adam_matches_torch_optim():
    """The tracker's written-out Adam (no torch._dynamo import) computes torch.optim.Adam's steps,
    with two learning rates and a parameter that sits out a step."""
    from neuavatar.track.adam import Adam

    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(4)
    ours = [a.clone().requires_grad_(True), b.clone().requires_grad_(True)]
    theirs = [a.clone().requires_grad_(True), b.clone().requires_grad_(True)]
    mine = Adam([{"params": [ours[0]], "lr": 0.05}, {"params": [ours[1]], "lr": 0.002}])
    reference = torch.optim.Adam([{"params": [theirs[0]], "lr": 0.05}, {"params": [theirs[1]], "lr": 0.002}])
    for step in range(20):
        for params, opt in ((ours, mine), (theirs, reference)):
            opt.zero_grad(set_to_none=True)
            loss = (params[0] ** 3).sum() + (0 if step % 5 == 4 else (params[1] - 1).pow(2).sum())
            loss.backward()
            opt.step()
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)  # float rounding: other operation order
    assert not torch.equal(ours[0], a)


def test_rigid_init_recovers_a_known_pose(head):
    params = head.zero_params(3)
    params.rotation[:] = torch.tensor([[0.1, 0.3, -0.05], [-0.2, -0.4, 0.1], [0.0, 0.0, 0.2]])
    params.translation[:] = torch.tensor([[0.02, -0.01, -0.6], [-0.03, 0.02, -0.8], [0.0, 0.05, -0.5]])
    out = head(params)
    points = head.landmarks(out.vertices)
    k = torch.tensor([[800.0, 800.0, 256.0, 256.0]]).repeat(3, 1)
    cam = model_to_camera(points)
    uv = project(cam, k)
    # MediaPipe-like relative depth, in pixels: camera depth scaled like x
    z = (cam[..., 2] - cam[..., 2].mean(1, keepdim=True)) * k[:, :1] / cam[..., 2].mean(1, keepdim=True)
    rest = head(head.zero_params(1))
    rotation, translation = rigid_init(head.landmarks(rest.vertices)[0], rest.joints[0, 0],
                                       torch.cat([uv, z[..., None]], -1), k)
    from neuavatar.head.lbs import axis_angle_to_matrix

    r_err = axis_angle_to_matrix(rotation).transpose(1, 2) @ axis_angle_to_matrix(params.rotation)
    angle = torch.rad2deg(matrix_to_axis_angle(r_err).norm(dim=-1))
    assert (angle < 2.0).all(), f"rotation off by {angle.tolist()} degrees"
    assert (torch.linalg.norm(translation - params.translation, dim=-1) < 0.03).all()


def test_tracking_real_video(tracked, dataset_dir):
    """64 frames of a real clip at 128 px, CPU: accurate, steady, and the files a person checks."""
    m = tracked.metrics
    assert m["landmark_error_px"] < 3.0, m
    assert m["silhouette_iou"] > 0.85, m
    assert m["jitter_px_per_frame2"] <= 1.05 * m["detector_jitter_px_per_frame2"], m
    d = tracked.tracking_dir
    tracking = Tracking.load(d)
    assert tracking.num_frames == 64 and tracking.arrays["expression"].shape == (64, 49)
    assert tracking.meta["head_model"]["name"] == "openhead"
    assert tracking.meta["dataset"]["size"] == 128 and tracking.albedo.shape == (128, 128, 3)
    for name in ("overlay.mp4", "metrics.json", "metrics.png"):
        assert (d / name).stat().st_size > 1000, name
    from neuavatar.video import probe_video

    info = probe_video(d / "overlay.mp4")
    assert (info.width, info.height) == (256, 128)
    history = json.loads((d / "metrics.json").read_text())["history"]
    assert history[-1]["landmark_px"] < history[0]["landmark_px"] / 2, "the fit must improve on the initial pose"


def test_tracking_params_reproduce_the_landmarks(tracked, dataset_dir, head):
    """The saved parameters and intrinsics, put back through the model, land on the detections."""
    tracking = Tracking.load(tracked.tracking_dir)
    ds = Dataset(dataset_dir)
    params = tracking.head_params(slice(0, 8))
    k = torch.from_numpy(tracking.arrays["intrinsics"][:8])
    offsets = torch.from_numpy(tracking.arrays["landmark_offsets"])
    points = landmarks_with_offsets(head, params, offsets, head.landmark_vertices())
    uv = project(model_to_camera(points), k).numpy()
    error = np.linalg.norm(uv - ds.landmarks[:8, :, :2], axis=-1).mean() * 512 / ds.size
    assert error < 3.0
    assert abs(error - tracking.arrays["landmark_error_px"][:8].mean()) < 0.05


def test_same_request_is_reused_and_different_is_refused(tracked, dataset_dir):
    again = track_dataset(dataset_dir, tracked.tracking_dir, SMOKE)
    assert again.reused
    from neuavatar import OutputExistsError

    with pytest.raises(OutputExistsError, match="different tracking"):
        track_dataset(dataset_dir, tracked.tracking_dir, TrackerOptions(**{**vars(SMOKE), "num_shape": 50}))


def test_realtime_mode(dataset_dir, head, tracked):
    ds = Dataset(dataset_dir)
    tracking = Tracking.load(tracked.tracking_dir)
    tracker = Tracker(head, TrackerOptions(device="cpu"), torch.device("cpu"))
    focal = float(tracking.arrays["intrinsics"][0, 0])
    offsets = torch.from_numpy(tracking.arrays["landmark_offsets"])
    session = tracker.realtime(ds.size, focal, shape=torch.from_numpy(tracking.arrays["shape"]),
                               landmark_offsets=offsets)
    errors = []
    for i in range(32):
        lmk = torch.from_numpy(ds.landmarks[i]).float()  # this clip's crop is the whole (still) frame
        p = session.track_frame(lmk, timestamp_ms=40 * i)
        points = landmarks_with_offsets(head, p, offsets, head.landmark_vertices())
        uv = project(model_to_camera(points), session.intrinsics)[0]
        errors.append(float(torch.linalg.norm(uv - lmk[:, :2], dim=-1).mean()) * 512 / ds.size)
    assert np.mean(errors[8:]) < 4.0, errors
    with pytest.raises(ValueError, match="increase"):
        session.track_frame(torch.from_numpy(ds.landmarks[32]).float(), timestamp_ms=0)
    with pytest.raises(ValueError, match=r"\(478, 3\)"):
        session.track_frame(torch.zeros(68, 3), timestamp_ms=10_000)


def test_landmark_tracking_of_a_whole_clip_at_once(dataset_dir, head):
    """``track_landmarks`` (how driving videos are tracked): every frame lands on its landmarks, and
    far closer than a fit that stops early; a progress report for every step."""
    ds = Dataset(dataset_dir)
    tracker = Tracker(head, TrackerOptions(device="cpu"), torch.device("cpu"))
    seen = []
    result = tracker.track_landmarks(ds, steps=150, progress=lambda step, done, total: seen.append((done, total)))
    error = result.per_frame["landmark_error_px"]
    assert seen[-1] == (150, 150) and result.metrics["valid_frames"] == ds.num_frames == len(error)
    assert error.mean() < 2.5 and error.max() < 5.0, error
    assert result.metrics["landmark_error_px"] == pytest.approx(error.mean(), rel=1e-5)
    early = tracker.track_landmarks(ds, steps=10).metrics["landmark_error_px"]
    assert early > 1.5 * error.mean(), (early, error.mean())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_landmark_tracking_cuda_graph_matches_cpu(dataset_dir, head):
    """On CUDA the landmark stage replays captured CUDA graphs (and runs a remainder of steps
    eagerly): it ends where the CPU's step-by-step loop ends."""
    ds = Dataset(dataset_dir)
    states = [Tracker(head, TrackerOptions(device=d), torch.device(d)).track_landmarks(ds, steps=45).state
              for d in ("cuda", "cpu")]
    for name in ("expression", "jaw", "rotation", "translation"):
        torch.testing.assert_close(getattr(states[0], name).detach().cpu(), getattr(states[1], name).detach(),
                                   rtol=0, atol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_realtime_cuda_graph_matches_eager(dataset_dir, head):
    """The captured CUDA graph computes what the step-by-step (eager) loop computes."""
    ds = Dataset(dataset_dir)
    results = []
    for use_graph in (True, False):
        tracker = Tracker(head, TrackerOptions(device="cuda"), torch.device("cuda"))
        session = tracker.realtime(ds.size, 300.0)
        session._use_graph = use_graph
        for i in range(6):
            p = session.track_frame(torch.from_numpy(ds.landmarks[i]).float(), timestamp_ms=40 * i)
        results.append(p)
    for name in ("expression", "jaw", "rotation", "translation"):
        torch.testing.assert_close(getattr(results[0], name), getattr(results[1], name), rtol=0, atol=2e-3)


def test_bad_datasets(tmp_path, dataset_dir):
    with pytest.raises(DatasetError, match="not a NeuAvatar dataset"):
        track_dataset(tmp_path, tmp_path / "t", SMOKE)
    old = tmp_path / "old"
    shutil.copytree(dataset_dir, old)
    meta = json.loads((old / "dataset.json").read_text())
    meta["version"] = 0
    (old / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="version 0"):
        track_dataset(old, tmp_path / "t", SMOKE)
    holes = tmp_path / "holes"
    shutil.copytree(dataset_dir, holes)
    (holes / "frames" / "000007.jpg").unlink()
    with pytest.raises(DatasetError, match="incomplete.*first: 7"):
        track_dataset(holes, tmp_path / "t", SMOKE)


def test_bad_flame_files(tmp_path, dataset_dir):
    broken = tmp_path / "generic_model.pkl"
    broken.write_bytes(b"this is not a pickle")
    landmarks = tmp_path / "lmk.npz"
    np.savez(landmarks, faces=np.zeros(478, np.int64), barycentric=np.full((478, 3), 1 / 3))
    with pytest.raises(InputError, match="generic_model.pkl"):
        track_dataset(dataset_dir, tmp_path / "t", TrackerOptions(**{**vars(SMOKE), "head_model": str(broken),
                                                                    "flame_landmarks": str(landmarks)}))
    assert not (tmp_path / "t").exists()


def test_cli_track_errors_and_help(tmp_path):
    run = subprocess.run([sys.executable, "-m", "neuavatar", "track", str(tmp_path), "--out", str(tmp_path / "t")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "not a NeuAvatar dataset" in run.stderr and "Traceback" not in run.stderr
    helped = subprocess.run([sys.executable, "-m", "neuavatar", "track", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--landmark-steps" in helped.stdout and "--head-model" in helped.stdout


def test_focal_length_stays_physical(tracked):
    # weakly observed from a near-frontal head: it must stay a real camera's (a 10-120 degree view)
    tracking = Tracking.load(tracked.tracking_dir)
    width = tracking.meta["camera"]["source_size"][0]
    fov = 2 * math.degrees(math.atan(width / 2 / tracked.metrics["focal_source_px"]))
    assert 10 < fov < 120, fov
