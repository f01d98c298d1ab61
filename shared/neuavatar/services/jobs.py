"""Job records: ``jobs/{job_id}/job.json`` in the object store, the source of truth about a job.

The job API writes a record when it creates a job; each stage updates it as it starts, progresses
(throttled), finishes or fails. Only one stage works on a job at a time, so a read-modify-write is
enough. Each record has an entry in an index that lists jobs newest first without reading
them (:mod:`neuavatar.services.listing`). Deleting a job leaves a small tombstone (``jobs/{job_id}/deleted.json``) so that a stage
still holding one of its messages drops it instead of bringing the job back.

Record fields (docs/services.md): ``job_id``, ``state`` (queued, running, done, failed), ``stage``
(upload, preprocess, track, train), ``percent`` (of the whole job), ``stage_percent``, ``message``,
``avatar_id`` (when done), ``error`` (when failed), ``source``, ``options``, ``config`` (the resolved
run configuration), ``settings`` (each stage's service settings, without secrets), ``metrics``,
``created``, ``updated``, ``queued_at`` (when its current stage's message was published).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from neuavatar.api.errors import NotFoundError
from neuavatar.config import from_dict, to_dict
from neuavatar.errors import NeuAvatarError
from neuavatar.presets import PRESETS, RunConfig
from neuavatar.services.listing import ListingIndex, record_id
from neuavatar.storage import ObjectNotFound, ObjectStore, job_key

__all__ = ["JobState", "JobStage", "JOB_STAGES", "JobCancelled", "JobStore", "new_job_id", "check_job_id",
           "deleted_key", "now_iso", "overall_percent", "resolve_run_config", "TERMINAL_STATES"]

JobState = Literal["queued", "running", "done", "failed"]
JobStage = Literal["upload", "preprocess", "track", "train"]
JOB_STAGES: tuple[JobStage, ...] = ("upload", "preprocess", "track", "train")
TERMINAL_STATES = ("done", "failed")

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The share of the whole job each stage covers, for the record's overall percent.
_STAGE_SPAN = {"upload": (0.0, 0.0), "preprocess": (0.0, 15.0), "track": (15.0, 40.0), "train": (40.0, 100.0)}


class JobCancelled(NeuAvatarError):
    """The job was deleted while a stage worked on it."""


def new_job_id() -> str:
    """A fresh job id: a uuid4 in hex."""
    return uuid.uuid4().hex


def check_job_id(job_id: str, what: str = "job_id") -> str:
    """``job_id`` if it is 1-64 of ``A-Z a-z 0-9 _ -`` (safe in object keys and routing keys).

    Raises:
        ValueError: otherwise, naming ``what`` and the value.
    """
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"{what} must be 1-64 letters, digits, '_' or '-', got {str(job_id)[:80]!r}")
    return job_id


def deleted_key(job_id: str) -> str:
    """``jobs/{job_id}/deleted.json``: the tombstone of a deleted job."""
    return f"jobs/{check_job_id(job_id)}/deleted.json"


def now_iso() -> str:
    """Now, ISO 8601 in UTC with milliseconds (``2025-01-31T12:00:00.000Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def overall_percent(stage: str, stage_percent: float) -> float:
    """The whole job's progress when ``stage`` is ``stage_percent`` done."""
    start, end = _STAGE_SPAN.get(stage, (0.0, 0.0))
    return round(start + (end - start) * max(0.0, min(100.0, stage_percent)) / 100.0, 2)


def resolve_run_config(options: Mapping[str, Any], default_preset: str) -> RunConfig:
    """The run configuration a job's options ask for: the preset (or ``default_preset``), then
    ``size`` (the crops' and the avatar's side), then each ``config`` override (``section.field``
    -> a JSON value).

    Raises:
        ValueError: an unknown preset or section, an override that is not JSON, or a value its
            setting refuses; the message names it.
    """
    preset = options.get("preset") or default_preset
    if preset not in PRESETS:
        raise ValueError(f"options.preset {preset!r} is not one of {', '.join(PRESETS)}")
    data = to_dict(PRESETS[preset])
    size = int(options.get("size") or 0)
    if size < 0:
        raise ValueError(f"options.size must be positive (0: the preset's), got {size}")
    if size:
        data["preprocess"]["size"] = data["train"]["size"] = size
    for key, raw in dict(options.get("config") or {}).items():
        section, _, name = key.partition(".")
        if section not in data or not name:
            raise ValueError(f"options.config key {key!r} must read 'section.field' with section one of "
                             f"{', '.join(data)}")
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as e:
            raise ValueError(f"options.config[{key!r}] must be a JSON value, got {raw!r}: {e}") from None
        data[section][name] = value
    return from_dict(RunConfig, data, where="options")


class JobStore:
    """Job records in ``store``.

    Raises (every method): StorageUnavailable / StorageAccessDenied from the store.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.index = ListingIndex(store, "jobs", self.find)

    def create(self, job_id: str, *, source: str, options: Mapping[str, Any], config: Mapping[str, Any],
               stage: JobStage = "preprocess", message: str = "queued") -> dict[str, Any]:
        """Write the record of a new job, queued for ``stage``; the record."""
        now = now_iso()
        record = {"job_id": check_job_id(job_id), "state": "queued", "stage": stage, "percent": 0.0,
                  "stage_percent": 0.0, "message": message, "avatar_id": None, "error": None, "source": source,
                  "options": dict(options), "config": dict(config), "settings": {}, "metrics": {},
                  "created": now, "updated": now, "queued_at": now}
        self.store.put_json(job_key(job_id), record)
        self.index.add(record)
        return record

    def get(self, job_id: str) -> dict[str, Any]:
        """The record of ``job_id``.

        Raises:
            NotFoundError: there is no such job.
            ValueError: ``job_id`` is malformed.
        """
        try:
            return self.store.get_json(job_key(check_job_id(job_id)))
        except ObjectNotFound:
            raise NotFoundError(f"no job {job_id!r}") from None

    def find(self, job_id: str) -> dict[str, Any] | None:
        """The record of ``job_id``, or None."""
        try:
            return self.get(job_id)
        except NotFoundError:
            return None

    def update(self, job_id: str, *, create: bool = False, **changes: Any) -> dict[str, Any]:
        """Apply ``changes`` to the record (``updated`` is set) and store it; the new record.

        ``settings`` and ``metrics`` merge into what is there. With ``create``, a missing record is
        started (a job whose message came without one).

        Raises:
            JobCancelled: the job was deleted (a tombstone exists, or the record is gone and
                ``create`` is False).
        """
        record = self.find(job_id)
        new = record is None
        if record is None:
            if not create or self.deleted(job_id):
                raise JobCancelled(f"job {job_id} was deleted")
            record = {"job_id": job_id, "state": "queued", "stage": "preprocess", "percent": 0.0,
                      "stage_percent": 0.0, "message": "", "avatar_id": None, "error": None, "source": "",
                      "options": {}, "config": {}, "settings": {}, "metrics": {}, "created": now_iso()}
        for name in ("settings", "metrics"):
            if name in changes:
                record[name] = {**(record.get(name) or {}), **changes.pop(name)}
        record.update(changes)
        record["updated"] = now_iso()
        self.store.put_json(job_key(job_id), record)
        if self.deleted(job_id):  # deleted between the read and the write: do not bring it back
            self.store.delete(job_key(job_id))
            raise JobCancelled(f"job {job_id} was deleted")
        if new:
            self.index.add(record)
        return record

    def deleted(self, job_id: str) -> bool:
        """Whether ``job_id`` was deleted (its tombstone exists)."""
        return self.store.exists(deleted_key(job_id))

    def page(self, token: str = "", size: int = 50, state: JobState | None = None) -> tuple[list[dict[str, Any]], str]:
        """Up to ``size`` records (in ``state``, when given), newest first, after the page ``token``;
        (the records, the next page's token: empty after the last). Reads only the records on the
        page (and, with ``state``, those passed over).

        Raises:
            ValueError: ``token`` is not one this store gave out.
        """
        return self.index.page(token, size, (lambda r: r.get("state") == state) if state else (lambda r: True))

    def backfill_index(self) -> int:
        """Index the records that have none (written before the index existed); how many."""
        return self.index.backfill(self.store.list("jobs/"), lambda key: _valid(record_id(key, "job.json")))

    def delete(self, job_id: str, intermediate_prefixes: tuple[str, ...] = ("uploads", "datasets", "tracking",
                                                                            "checkpoints")) -> None:
        """Leave a tombstone, then remove the record and the job's intermediate objects (not its avatar).

        Raises:
            NotFoundError: there is no such job.
        """
        record = self.get(job_id)
        self.store.put_json(deleted_key(job_id), {"job_id": job_id, "deleted": now_iso(),
                                                  "state": record.get("state")})
        self.index.remove(record)
        for prefix in intermediate_prefixes:
            self.store.delete_prefix(f"{prefix}/{job_id}/")
        self.store.delete(job_key(job_id))


def _valid(job_id: str | None) -> str | None:
    return job_id if job_id is not None and _JOB_ID.fullmatch(job_id) else None
