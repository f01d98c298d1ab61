"""Shared fixtures: real clips from ../shared/data/videos, shortened and re-encoded as tests need.

The clips are read from the shared folder beside the checkout (never copied into the repo). Tests
that need them are skipped, with the reason, where that folder is absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from neuavatar.errors import ConfigError
from neuavatar.video import VideoWriter, read_frames

if TYPE_CHECKING:
    from neuavatar.services import ServiceRuntime, ServiceSettings
    from neuavatar.stack.seaweed import SeaweedServer
    from neuavatar.storage import ObjectStore

ROOT = Path(__file__).resolve().parents[1]
# The shared clips beside the checkout; a GPU host that got copies of some of them names their folder.
VIDEOS = Path(os.environ.get("NEUAVATAR_TEST_VIDEOS", ROOT.parent / "shared" / "data" / "videos"))

ANCHOR = "train_mimictalk_german_anchor_20s.mp4"  # frontal man, small head motion, 25 fps
HEADTURNS = "train_lp_d3_woman_headturns.mp4"  # head turns, 30 fps
GLASSES = "drive_lp_d19_man_glasses.mp4"  # another person, 30 fps
S3_SECRET = "svc-secret-0b4d2c"  # the S3 secret key of the `seaweed` fixture (tests check it never leaks)


def shared_video(name: str) -> Path:
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"real test clip {path} not found (the ../shared folder is not beside this checkout)")
    return path


def frames_of(name: str, n: int, size: int | None = None, start: int = 0) -> list[np.ndarray]:
    """The first ``n`` frames (after ``start``) of a shared clip, optionally resized to ``size``²."""
    import cv2

    out = []
    for f in read_frames(shared_video(name), max_frames=n + start):
        if f.index < start:
            continue
        rgb = f.rgb if size is None else cv2.resize(f.rgb, (size, size), interpolation=cv2.INTER_AREA)
        out.append(rgb)
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0, **kwargs) -> Path:
    with VideoWriter(path, fps, **kwargs) as w:
        for f in frames:
            w.write(f)
    return path


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make_clip(clip_dir) -> Callable[..., Path]:
    """Cached factory: ``make_clip(name, frames, size)`` -> a short H.264 copy of a shared clip."""
    cache: dict[tuple, Path] = {}

    def make(name: str, n: int, size: int | None = None, fps: float = 25.0) -> Path:
        key = (name, n, size, fps)
        if key not in cache:
            path = clip_dir / f"{Path(name).stem}_{n}_{size}.mp4"
            cache[key] = write_video(path, frames_of(name, n, size), fps)
        return cache[key]

    return make


def on_canvas(frames: list[np.ndarray], canvas: tuple[int, int], at: tuple[int, int],
              background: tuple[int, int, int] = (90, 110, 100)) -> list[np.ndarray]:
    """Paste each frame at ``at`` (x, y) onto a plain canvas (width, height)."""
    out = []
    for f in frames:
        c = np.empty((canvas[1], canvas[0], 3), np.uint8)
        c[:] = background
        h, w = f.shape[:2]
        c[at[1]:at[1] + h, at[0]:at[0] + w] = f
        out.append(c)
    return out


# A tiny, quick avatar training: what the test suite affords on 2 CPU cores.
def _tiny():
    from neuavatar.avatar import AvatarConfig

    return AvatarConfig(size=96, gaussians_per_triangle=1, device="cpu", steps=(80, 150, 40), batch_size=(4, 2, 2),
                        checkpoint_every=50, eval_frames=8, reenact_frames=8)


TINY = _tiny()


@pytest.fixture(scope="session")
def headturns_tracked(tmp_path_factory, make_clip):
    """A real clip with head motion (so the mean image is no free win), preprocessed and tracked:
    (work folder, dataset, tracking)."""
    from neuavatar import PreprocessConfig, preprocess_video
    from neuavatar.track import TrackerOptions, track_dataset

    root = tmp_path_factory.mktemp("avatar")
    clip = make_clip(HEADTURNS, 64, 256)
    ds = preprocess_video(clip, root / "dataset", PreprocessConfig(size=128, min_frames=10, workers=2)).dataset_dir
    opts = TrackerOptions(device="cpu", landmark_steps=150, photometric_steps=(40,), photometric_sizes=(128,),
                          batch_frames=16, texture_size=128)
    tr = track_dataset(ds, root / "tracking", opts, overlay=False).tracking_dir
    return root, ds, tr


@pytest.fixture(scope="session")
def tiny_avatar(headturns_tracked):
    """A tiny avatar trained on :func:`headturns_tracked`: (TrainResult, progress calls seen)."""
    from neuavatar.avatar import train_avatar

    root, ds, tr = headturns_tracked
    seen = []
    result = train_avatar(ds, tr, root / "avatar", TINY, progress=lambda *a, **k: seen.append(a))
    return result, seen


@contextmanager
def seaweed_server(directory: Path, **settings) -> Iterator[SeaweedServer]:
    """A SeaweedFS S3 server in ``directory`` on a free port, with these ``StorageSettings`` fields,
    started and stopped afterwards; the test is skipped where the ``weed`` binary is missing.
    (Imported here, not at the top: the GPU host runs the CUDA tests without the S3 client installed.)"""
    from neuavatar.stack.process import free_port
    from neuavatar.stack.seaweed import SeaweedServer, weed_binary
    from neuavatar.storage import StorageSettings

    try:
        weed_binary()
    except ConfigError as error:
        pytest.skip(str(error))
    server = SeaweedServer(directory, StorageSettings(endpoint=f"127.0.0.1:{free_port()}", **settings))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The object store of the services' tests (test_services.py, test_reliability.py): one SeaweedFS
# server per test module (module scope), with retries generous enough to ride out its restart.
@pytest.fixture(scope="module")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    with seaweed_server(tmp_path_factory.mktemp("seaweed"), access_key="svc-access", secret_key=S3_SECRET,
                        bucket="neuavatar-services", retry_attempts=12, retry_initial_delay_seconds=0.1,
                        retry_max_delay_seconds=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def store(seaweed) -> ObjectStore:
    from neuavatar.storage import ObjectStore

    s = ObjectStore(seaweed.settings)
    s.ensure_bucket()
    return s


@contextmanager
def running_services(settings: ServiceSettings, names) -> Iterator[dict[str, ServiceRuntime]]:
    """Services ``names`` in this process, consuming before this yields; stopped afterwards
    (test_services.py, test_reliability.py)."""
    from neuavatar.services import ServiceRuntime

    runtimes: dict[str, ServiceRuntime] = {}
    try:
        for name in names:
            runtimes[name] = ServiceRuntime(name, settings).start()
        for runtime in runtimes.values():
            assert runtime.wait_consuming(30), f"{runtime.name} never consumed its queue"
        yield runtimes
    finally:
        for runtime in runtimes.values():
            runtime.stop()
