"""Job records, events and avatar metadata as ``neuavatar.v1`` messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.messaging import Event

__all__ = ["job_to_proto", "event_to_proto", "record_event", "avatar_to_proto", "options_to_dict", "options_to_proto",
           "STATE_ENUM", "STATE_NAME", "STAGE_ENUM", "KIND_ENUM"]

STATE_ENUM = {"queued": pb.JOB_STATE_QUEUED, "running": pb.JOB_STATE_RUNNING, "done": pb.JOB_STATE_SUCCEEDED,
              "failed": pb.JOB_STATE_FAILED, "cancelled": pb.JOB_STATE_CANCELLED}
STATE_NAME = {v: k for k, v in STATE_ENUM.items()}
STAGE_ENUM = {"upload": pb.STAGE_UPLOAD, "preprocess": pb.STAGE_PREPROCESS, "track": pb.STAGE_TRACK,
              "train": pb.STAGE_TRAIN}
KIND_ENUM = {"started": pb.EVENT_KIND_STARTED, "progress": pb.EVENT_KIND_PROGRESS, "metrics": pb.EVENT_KIND_METRICS,
             "done": pb.EVENT_KIND_DONE, "failed": pb.EVENT_KIND_FAILED}


def _timestamp(value: str | None) -> Timestamp | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _numbers(values: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (values or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def options_to_dict(options: pb.AvatarOptions) -> dict[str, Any]:
    """AvatarOptions as the plain data a job record keeps."""
    return {"name": options.name, "preset": options.preset, "size": options.size, "config": dict(options.config)}


def options_to_proto(options: Mapping[str, Any] | None) -> pb.AvatarOptions:
    o = options or {}
    return pb.AvatarOptions(name=str(o.get("name") or ""), preset=str(o.get("preset") or ""),
                            size=int(o.get("size") or 0), config={str(k): str(v) for k, v in (o.get("config") or {}).items()})


def job_to_proto(record: Mapping[str, Any]) -> pb.Job:
    """A job record (``jobs/{id}/job.json``) as a Job message."""
    job = pb.Job(job_id=record["job_id"], state=STATE_ENUM.get(record.get("state", ""), pb.JOB_STATE_UNSPECIFIED),
                 stage=STAGE_ENUM.get(record.get("stage", ""), pb.STAGE_UNSPECIFIED),
                 percent=float(record.get("percent") or 0.0), message=str(record.get("message") or ""),
                 avatar_id=str(record.get("avatar_id") or ""), error=str(record.get("error") or ""),
                 source=str(record.get("source") or ""), options=options_to_proto(record.get("options")))
    for name, field in (("created", "create_time"), ("updated", "update_time")):
        stamp = _timestamp(record.get(name))
        if stamp is not None:
            getattr(job, field).CopyFrom(stamp)
    return job


def event_to_proto(event: Event) -> pb.JobEvent:
    message = pb.JobEvent(job_id=event.job_id, stage=STAGE_ENUM.get(event.stage, pb.STAGE_UNSPECIFIED),
                          kind=KIND_ENUM[event.kind], percent=float(event.percent or 0.0), message=event.message,
                          metrics=_numbers(event.metrics))
    stamp = _timestamp(event.time)
    if stamp is not None:
        message.time.CopyFrom(stamp)
    return message


def record_event(record: Mapping[str, Any]) -> pb.JobEvent:
    """The job's state now, as the first event of a watch: ``done`` or ``failed`` once it ended,
    else ``progress`` with its current stage's percent."""
    state = record.get("state")
    kind = {"done": pb.EVENT_KIND_DONE, "failed": pb.EVENT_KIND_FAILED}.get(state, pb.EVENT_KIND_PROGRESS)
    text = record.get("error") if state == "failed" else record.get("message")
    message = pb.JobEvent(job_id=record["job_id"], stage=STAGE_ENUM.get(record.get("stage", ""), pb.STAGE_UNSPECIFIED),
                          kind=kind, percent=100.0 if state == "done" else float(record.get("stage_percent") or 0.0),
                          message=str(text or ""), metrics=_numbers(record.get("metrics")))
    stamp = _timestamp(record.get("updated"))
    if stamp is not None:
        message.time.CopyFrom(stamp)
    return message


def avatar_to_proto(meta: Mapping[str, Any]) -> pb.Avatar:
    """An avatar's metadata (``avatars/{id}/avatar.json``) as an Avatar message."""
    avatar = pb.Avatar(avatar_id=meta["avatar_id"], job_id=str(meta.get("job_id") or ""), name=str(meta.get("name") or ""),
                       size=int(meta.get("size") or 0), num_expression=int(meta.get("num_expression") or 0),
                       metrics=_numbers(meta.get("metrics")), size_bytes=int(meta.get("size_bytes") or 0))
    stamp = _timestamp(meta.get("created"))
    if stamp is not None:
        avatar.create_time.CopyFrom(stamp)
    return avatar
