"""Between the wire and the library: protobuf messages of neuavatar.v1 to and from the renderer's
arguments and results. Every check that can fail raises ``ValueError`` naming the field, which the
error interceptor turns into INVALID_ARGUMENT (or a live session into a LiveError)."""

from __future__ import annotations

import re
from dataclasses import fields

import cv2
import numpy as np

from neuavatar.animate.controls import Controls
from neuavatar.animate.renderer import PARAM_SIZES, encode_jpeg
from neuavatar.animate.stream import StreamError, StreamFrame
from neuavatar.api._proto import neuavatar_pb2 as pb

__all__ = ["check_id", "encoding_name", "jpeg_quality", "params_from_proto", "controls_from_proto",
           "image_from_proto", "encode_frame", "frame_to_proto", "live_event_to_proto"]

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_ENCODINGS = {pb.ENCODING_UNSPECIFIED: "jpeg", pb.ENCODING_JPEG: "jpeg", pb.ENCODING_RGB: "rgb"}
_ENCODING_ENUM = {"jpeg": pb.ENCODING_JPEG, "rgb": pb.ENCODING_RGB}


def check_id(value: str, what: str = "avatar_id") -> str:
    """``value`` if it is a well-formed id (so it is safe in a path or an object key).

    Raises:
        ValueError: empty, too long, or characters outside [A-Za-z0-9._-] (or only dots).
    """
    if not value:
        raise ValueError(f"{what} is required")
    if not _ID.fullmatch(value) or set(value) == {"."}:
        raise ValueError(f"{what} must be 1-128 characters of A-Z a-z 0-9 . _ -, got {value[:140]!r}")
    return value


def encoding_name(value: int) -> str:
    """``jpeg`` or ``rgb`` for an :class:`Encoding` value (UNSPECIFIED: jpeg)."""
    if value not in _ENCODINGS:
        raise ValueError(f"encoding {value} is not one of {', '.join(pb.Encoding.keys())}")
    return _ENCODINGS[value]


def jpeg_quality(value: int) -> int:
    """JPEG quality 1..100 (0: 90)."""
    if value == 0:
        return 90
    if not 1 <= value <= 100:
        raise ValueError(f"quality must lie in 1..100 (0: the default, 90), got {value}")
    return value


def params_from_proto(message: pb.HeadParams) -> dict[str, np.ndarray]:
    """The head parameters a request sets (arrays of their flat length; eyes as (2, 3) when six
    values came), for :meth:`AvatarRenderer.params`, which checks each size against the avatar."""
    out = {}
    for name in PARAM_SIZES:
        values = getattr(message, name)
        if len(values):
            array = np.asarray(values, dtype=np.float32)
            out[name] = array.reshape(2, 3) if name == "eyes" and array.size == 6 else array
    return out


def controls_from_proto(message: pb.Controls) -> Controls:
    """The controls a request sets; unset ones keep :class:`Controls`' defaults."""
    values = {f.name: getattr(message, f.name) for f in fields(Controls)
              if f.name != "expression" and message.HasField(f.name)}
    return Controls(expression=tuple(message.expression), **values)


def image_from_proto(message: pb.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a JPEG or PNG file, or from raw RGB with its width and height.

    Raises:
        ValueError: no data, raw bytes that do not match the size, or a file that does not decode.
    """
    if not message.data:
        raise ValueError("image.data is empty")
    if message.width or message.height:
        w, h = message.width, message.height
        if w <= 0 or h <= 0:
            raise ValueError(f"raw RGB needs a positive image.width and image.height, got {w} x {h}")
        if len(message.data) != w * h * 3:
            raise ValueError(f"raw RGB of {w} x {h} is {w * h * 3} bytes, got {len(message.data)}")
        return np.frombuffer(message.data, np.uint8).reshape(h, w, 3)
    bgr = cv2.imdecode(np.frombuffer(message.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("image.data is not a JPEG or PNG file (raw RGB needs image.width and image.height)")
    return np.ascontiguousarray(bgr[..., ::-1])


def encode_frame(rgb: np.ndarray, encoding: str, quality: int) -> bytes:
    """An (H, W, 3) uint8 frame as a JPEG file or raw RGB bytes."""
    return encode_jpeg(rgb, quality) if encoding == "jpeg" else np.ascontiguousarray(rgb).tobytes()


def frame_to_proto(frame: StreamFrame) -> pb.Frame:
    t = frame.timings_ms
    return pb.Frame(id=frame.id, data=frame.data, encoding=_ENCODING_ENUM[frame.encoding], width=frame.width,
                    height=frame.height, dropped_before=frame.dropped_before, notes=frame.notes,
                    timings=pb.Timings(queued_ms=t.get("queued", 0.0), render_ms=t.get("render", 0.0),
                                       encode_ms=t.get("encode", 0.0), total_ms=t.get("total", 0.0)))


def live_event_to_proto(event: StreamFrame | StreamError) -> pb.LiveResponse:
    if isinstance(event, StreamError):
        return pb.LiveResponse(error=pb.LiveError(id=event.id, message=event.message))
    return pb.LiveResponse(frame=frame_to_proto(event))
