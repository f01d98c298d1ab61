"""Reading and writing video files through PyAV (FFmpeg's libraries).

Frames are decoded one at a time (memory stays flat however long the video is), turned upright
according to the container's display matrix (phones record sideways and store a rotation), and
stretched to square pixels when the stream declares a non-square sample aspect ratio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from neuavatar.errors import InputError

__all__ = ["VideoInfo", "Frame", "probe_video", "read_frames", "frame_timestamps", "decode_at", "VideoWriter",
           "file_sha256"]

_CONVERT_HINT = "convert it with e.g. `ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4`"


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself, after rotation (``width``/``height`` as displayed)."""

    path: Path
    container: str
    codec: str
    width: int  # displayed width in pixels, after rotation and aspect correction
    height: int
    rotation_deg: int  # counter-clockwise rotation applied to decoded frames to show them upright
    fps: float  # average frame rate
    frame_count: int | None  # as declared by the container; None when it does not say
    duration_seconds: float | None
    pixel_format: str
    sample_aspect_ratio: float  # 1.0 for square pixels


@dataclass(frozen=True)
class Frame:
    """One decoded frame, upright, as RGB."""

    index: int  # position in the (trimmed, subsampled) sequence, from 0
    source_index: int  # position among all decoded frames of the file, from 0
    time_seconds: float  # presentation time in the source
    rgb: np.ndarray  # (H, W, 3) uint8


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputError(f"video not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise InputError(
            f"{path} is not a readable video ({_ffmpeg_reason(e)}); is it a video file, and is it complete?"
        ) from None


def _ffmpeg_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise InputError(f"{path} has no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    codec = stream.codec_context
    if codec is None or codec.name in (None, "", "none"):
        tag = getattr(stream.codec_context, "codec_tag", None) if codec is not None else None
        raise InputError(f"{path} uses a video codec this build cannot decode ({tag or 'unknown'}); {_CONVERT_HINT}")
    return stream


def probe_video(path: Path) -> VideoInfo:
    """Open ``path``, check that it holds a decodable video stream, and describe it.

    Decodes the first frame, so a file whose header is fine but whose data is not fails here.

    Raises:
        InputError: missing, empty, not a video, no video stream, undecodable codec or data.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        first = None
        try:
            for first in container.decode(stream):
                break
        except av.error.FFmpegError as e:
            raise InputError(f"{path} is corrupt: its first frame cannot be decoded ({_ffmpeg_reason(e)})") from None
        if first is None:
            raise InputError(f"{path} holds a video stream but no decodable frame; {_CONVERT_HINT}")
        rotation = _rotation(first)
        sar = _sample_aspect(stream)
        w, h = _display_size(first.width, first.height, sar, rotation)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        frames = stream.frames or None
        if frames is None and duration and fps:
            frames = None  # an estimate would mislead the truncation check; leave it unknown
        return VideoInfo(
            path=path,
            container=container.format.name,
            codec=stream.codec_context.name,
            width=w,
            height=h,
            rotation_deg=rotation,
            fps=fps,
            frame_count=frames,
            duration_seconds=duration,
            pixel_format=str(first.format.name),
            sample_aspect_ratio=float(sar),
        )


def _rotation(frame: av.VideoFrame) -> int:
    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    return (round(rot / 90) * 90) % 360


def _sample_aspect(stream: av.video.stream.VideoStream) -> Fraction:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not sar or sar <= 0:
        return Fraction(1)
    return Fraction(sar)


def _display_size(width: int, height: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    if sar != 1:
        width = int(round(width * sar))
    return (height, width) if rotation in (90, 270) else (width, height)


@contextmanager
def _decoder(path: Path, threads: int) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream, Fraction]]:
    """The open container, its video stream set up for decoding, and the stream's sample aspect ratio."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        yield container, stream, _sample_aspect(stream)


def _upright_rgb(frame: av.VideoFrame, sar: Fraction, scale_to: tuple[int, int] | None,
                 interpolation: str | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame: scaled (to ``scale_to``, upright size, or to square
    pixels), then turned upright."""
    rotation = _rotation(frame)
    if scale_to is not None:
        w, h = scale_to if rotation in (0, 180) else scale_to[::-1]
    else:
        w, h = _display_size(frame.width, frame.height, sar, 0)
    rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation=interpolation)
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation else rgb


def read_frames(path: Path, *, start_seconds: float = 0.0, max_frames: int | None = None, step: int = 1,
                threads: int = 0, scale_to: tuple[int, int] | None = None,
                interpolation: str | None = None) -> Iterator[Frame]:
    """Decode ``path`` frame by frame, upright, as RGB.

    Args:
        start_seconds: skip frames presented before this time.
        max_frames: stop after this many frames have been yielded (after ``step``).
        step: keep every ``step``-th frame (2 halves the frame rate).
        threads: decoder threads; 0 lets FFmpeg choose.
        scale_to: ``(width, height)`` of the upright output, when the caller wants the frames resized
            by the decoder (cheaper than resizing afterwards). Default: the display size.
        interpolation: FFmpeg scaler for ``scale_to`` (e.g. ``"AREA"`` to shrink); default bilinear.

    Raises:
        InputError: when the data stops decoding part-way (a corrupt or truncated file).
    """
    path = Path(path)
    with _decoder(path, threads) as (container, stream, sar):
        seconds_per_tick = float(stream.time_base)  # times computed as in frame_timestamps, bit for bit
        decoded = -1
        kept = 0
        source_index = -1
        try:
            for frame in container.decode(stream):
                source_index += 1
                t = frame.pts * seconds_per_tick if frame.pts is not None else source_index / float(stream.average_rate or 25)
                if t + 1e-6 < start_seconds:
                    continue
                decoded += 1
                if decoded % step:
                    continue
                rgb = _upright_rgb(frame, sar, scale_to, interpolation)
                yield Frame(index=kept, source_index=source_index, time_seconds=t, rgb=rgb)
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise InputError(
                f"{path} is corrupt or truncated: decoding failed after frame {source_index} ({_ffmpeg_reason(e)})"
            ) from None


def frame_timestamps(path: Path) -> tuple[np.ndarray, Fraction] | None:
    """Presentation timestamps of every frame, from the container's packets, without decoding.

    Returns:
        ``(pts, time_base)``: (T,) int64 timestamps in presentation order and the stream's time base
        (seconds per unit); or None when the file's timestamps cannot identify frames (missing or
        repeated), in which case frames must be decoded in order with :func:`read_frames`.

    Raises:
        InputError: when the container itself cannot be read to the end.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        pts = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or getattr(packet, "is_discard", False):
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
        except av.error.FFmpegError as e:
            raise InputError(f"{path} is corrupt or truncated: its packets cannot be read ({_ffmpeg_reason(e)})") from None
        values = np.sort(np.asarray(pts, np.int64))
        if len(values) == 0 or len(np.unique(values)) != len(values):
            return None
        return values, Fraction(stream.time_base)


def decode_at(path: Path, pts: np.ndarray, *, scale_to: tuple[int, int] | None = None, threads: int = 1,
              interpolation: str | None = None) -> Iterator[np.ndarray]:
    """Decode exactly the frames with timestamps ``pts`` (increasing), upright, as RGB.

    Seeks to the key frame before the first one, so a worker can decode its own segment of a long
    video without decoding everything before it. ``scale_to`` and rotation as in :func:`read_frames`.

    Raises:
        InputError: a wanted frame does not come out of the decoder (the file is damaged).
    """
    path = Path(path)
    with _decoder(path, threads) as (container, stream, sar):
        container.seek(int(pts[0]), stream=stream, backward=True, any_frame=False)
        k = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.pts < pts[k]:
                    continue  # before the segment: decoded only to reach it
                if frame.pts != pts[k]:
                    break
                yield _upright_rgb(frame, sar, scale_to, interpolation)
                k += 1
                if k == len(pts):
                    return
        except av.error.FFmpegError as e:
            raise InputError(f"{path} is corrupt: decoding failed near timestamp {pts[k]} ({_ffmpeg_reason(e)})") from None
        raise InputError(f"{path} is damaged: the frame at {float(pts[k] * stream.time_base):.3f} s cannot be decoded")


class VideoWriter:
    """Write RGB frames to an H.264 (or other codec) file. Use as a context manager."""

    def __init__(self, path: Path, fps: float, *, codec: str = "libx264", crf: int = 18, pix_fmt: str = "yuv420p",
                 rotation_deg: int = 0, options: dict[str, str] | None = None, container_format: str | None = None,
                 container_options: dict[str, str] | None = None):
        """Args: ``options`` go to the encoder, ``container_options`` to the muxer (e.g.
        ``{"movflags": "faststart"}``); ``container_format`` overrides the one the suffix implies."""
        self.path = Path(path)
        self._container = av.open(str(self.path), "w", format=container_format, options=container_options or {})
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.pix_fmt = pix_fmt
        opts = {"crf": str(crf)} if codec in ("libx264", "libx265") else {}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        opts.update(options or {})
        self._stream.options = opts
        if rotation_deg:
            self._stream.set_display_rotation(rotation_deg)
        self._opened = False

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 frame; all frames must have the size of the first."""
        if not self._opened:
            self._stream.height, self._stream.width = rgb.shape[:2]
            self._opened = True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._opened:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
