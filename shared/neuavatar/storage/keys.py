"""The object key layout of docs/services.md, built in one place from validated ids.

Ids come from clients (job ids, avatar ids), so each is checked before it becomes part of a key: a
``/`` or ``..`` in an id would let one job read or overwrite another's objects.
"""

from __future__ import annotations

import re

from neuavatar.storage.errors import InvalidKeyError

__all__ = [
    "validate_id",
    "validate_key",
    "upload_key",
    "job_key",
    "dataset_key",
    "tracking_key",
    "resume_key",
    "avatar_key",
    "avatar_meta_key",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EXT = re.compile(r"^[A-Za-z0-9]{1,10}$")


def validate_id(value: str, name: str = "id") -> str:
    """``value`` if it can be one path segment of a key: 1-128 of ``A-Z a-z 0-9 . _ -``, first one
    alphanumeric, no ``..``.

    Raises:
        InvalidKeyError: otherwise; the message names ``name`` and the value.
    """
    if not isinstance(value, str) or not value:
        raise InvalidKeyError(f"{name} must be a non-empty string, got {value!r}")
    if "/" in value or ".." in value or not _ID.match(value):
        raise InvalidKeyError(f"{name} {value!r} is not a valid id: use 1-128 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit, without '/' or '..'")
    return value


def validate_key(key: str) -> str:
    """``key`` if it is a relative object key: no leading ``/``, no empty, ``.`` or ``..`` segment.

    Raises:
        InvalidKeyError: otherwise.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"object key must be a non-empty string, got {key!r}")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments) or "\\" in key or any(ord(c) < 32 for c in key):
        raise InvalidKeyError(f"object key {key!r} must be relative, without empty, '.' or '..' segments, "
                              "backslashes or control characters")
    return key


def upload_key(job_id: str, ext: str = "") -> str:
    """``uploads/{job_id}/video{.ext}``: the uploaded video (``ext`` with or without its dot, or empty)."""
    ext = ext.removeprefix(".")
    if ext and not _EXT.match(ext):
        raise InvalidKeyError(f"video extension must be 1-10 letters or digits, got {ext!r}")
    suffix = f".{ext.lower()}" if ext else ""
    return f"uploads/{validate_id(job_id, 'job_id')}/video{suffix}"


def job_key(job_id: str) -> str:
    """``jobs/{job_id}/job.json``: the job record (state, stage, progress, avatar id, error)."""
    return f"jobs/{validate_id(job_id, 'job_id')}/job.json"


def dataset_key(job_id: str) -> str:
    """``datasets/{job_id}/dataset.tar``: the preprocess output directory, tarred."""
    return f"datasets/{validate_id(job_id, 'job_id')}/dataset.tar"


def tracking_key(job_id: str) -> str:
    """``tracking/{job_id}/tracking.tar``: the tracker output directory, tarred."""
    return f"tracking/{validate_id(job_id, 'job_id')}/tracking.tar"


def resume_key(job_id: str) -> str:
    """``checkpoints/{job_id}/resume.pt``: the trainer's latest resumable checkpoint."""
    return f"checkpoints/{validate_id(job_id, 'job_id')}/resume.pt"


def avatar_key(avatar_id: str) -> str:
    """``avatars/{avatar_id}/avatar.tar``: the servable avatar directory, tarred."""
    return f"avatars/{validate_id(avatar_id, 'avatar_id')}/avatar.tar"


def avatar_meta_key(avatar_id: str) -> str:
    """``avatars/{avatar_id}/avatar.json``: the avatar's metadata (job, metrics, created)."""
    return f"avatars/{validate_id(avatar_id, 'avatar_id')}/avatar.json"
