"""The job message: what a stage's queue carries, parsed strictly.

A worker must never guess at a job. Anything other than exactly ``{"job_id", "stage", "inputs",
"config"}`` with the right types (duplicate keys, NaN, extra fields, a stage that is not this
queue's) is a :class:`BadMessage`, which the worker dead-letters at once instead of retrying.
The delivery attempt travels in the ``x-neuavatar-attempt`` header, not the body, so that a retry
re-sends the body unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from neuavatar.messaging.errors import BadMessage
from neuavatar.messaging.topology import STAGES, Stage

__all__ = ["JobMessage", "ATTEMPT_HEADER", "REASON_HEADER", "STAGE_HEADER", "CONTENT_TYPE", "strict_json",
           "valid_job_id"]

ATTEMPT_HEADER = "x-neuavatar-attempt"
REASON_HEADER = "x-neuavatar-reason"
STAGE_HEADER = "x-neuavatar-stage"
CONTENT_TYPE = "application/json"

# Job ids appear in routing keys (``job.{job_id}.…``, where a dot would split them) and in S3 keys.
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_FIELDS = ("job_id", "stage", "inputs", "config")


def valid_job_id(job_id: object) -> bool:
    """Whether ``job_id`` is 1-128 letters, digits, '-' or '_' (safe in routing and S3 keys)."""
    return isinstance(job_id, str) and bool(_JOB_ID.match(job_id))


@dataclass(frozen=True)
class JobMessage:
    """One unit of work for one stage.

    Raises:
        BadMessage: a field has the wrong type or value (also from the constructor).
    """

    job_id: str
    stage: Stage
    inputs: dict[str, str] = field(default_factory=dict)
    """Input name -> S3 key (``{"video": "uploads/abc/video.mp4"}``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The stage's config overrides, plain JSON data."""
    attempt: int = 1
    """1 on first delivery; a failed handler's retry carries attempt + 1."""
    message_id: str | None = None
    """The AMQP message id it arrived with (set on receipt; kept across retries)."""
    redelivered: bool = False
    """The broker delivered it before without an ack (a worker died mid-job): check for existing output."""

    def __post_init__(self) -> None:
        if not valid_job_id(self.job_id):
            raise BadMessage(f"job_id must be 1-128 letters, digits, '-' or '_', got {self.job_id!r}")
        if self.stage not in STAGES:
            raise BadMessage(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if not isinstance(self.inputs, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in self.inputs.items()):
            raise BadMessage(f"inputs must map names to object keys (strings), got {self.inputs!r}")
        if not isinstance(self.config, dict):
            raise BadMessage(f"config must be a JSON object, got {type(self.config).__name__}")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise BadMessage(f"attempt must be a positive integer, got {self.attempt!r}")

    def to_json(self) -> bytes:
        """The message body: compact UTF-8 JSON of job_id, stage, inputs and config."""
        body = {"job_id": self.job_id, "stage": self.stage, "inputs": self.inputs, "config": self.config}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def next_attempt(self) -> JobMessage:
        """The same job, one attempt later (what a retry publishes)."""
        return replace(self, attempt=self.attempt + 1, redelivered=False)

    @classmethod
    def from_json(cls, body: bytes, *, attempt: int = 1, message_id: str | None = None,
                  redelivered: bool = False) -> JobMessage:
        """Parse a body strictly.

        Raises:
            BadMessage: not UTF-8 JSON, not an object, duplicate/missing/extra keys, or a bad field.
        """
        data = strict_json(body)
        if not isinstance(data, dict):
            raise BadMessage(f"a job message must be a JSON object, got {type(data).__name__}")
        missing = [k for k in _FIELDS if k not in data]
        extra = sorted(set(data) - set(_FIELDS))
        if missing or extra:
            raise BadMessage(f"a job message has exactly the keys {', '.join(_FIELDS)}; "
                             f"missing {missing or 'none'}, unexpected {extra or 'none'}")
        return cls(data["job_id"], data["stage"], data["inputs"], data["config"], attempt=attempt,
                   message_id=message_id, redelivered=redelivered)

    @classmethod
    def from_delivery(cls, body: bytes, *, content_type: str | None, headers: Mapping[str, Any] | None,
                      message_id: str | None, redelivered: bool, expected_stage: Stage) -> JobMessage:
        """Parse what a queue delivered, headers included, for the worker of ``expected_stage``.

        Raises:
            BadMessage: the content type is not JSON, the attempt header is not a positive
                integer, the body is bad, or the job belongs to another stage.
        """
        if content_type not in (None, "", CONTENT_TYPE):
            raise BadMessage(f"content_type must be {CONTENT_TYPE}, got {content_type!r}")
        attempt = (headers or {}).get(ATTEMPT_HEADER, 1)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise BadMessage(f"header {ATTEMPT_HEADER} must be a positive integer, got {attempt!r}")
        job = cls.from_json(body, attempt=attempt, message_id=message_id, redelivered=redelivered)
        if job.stage != expected_stage:
            raise BadMessage(f"a {job.stage!r} job arrived on the {expected_stage!r} queue")
        return job


def strict_json(body: bytes) -> Any:
    """Decode UTF-8 JSON, refusing duplicate keys and NaN/Infinity (which other parsers read differently).

    Raises:
        BadMessage: with the parser's reason and position.
    """

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise BadMessage(f"duplicate keys in JSON object: {duplicated}")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise BadMessage(f"JSON contains {name}, which is not valid JSON")

    try:
        text = bytes(body).decode("utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except UnicodeDecodeError as e:
        raise BadMessage(f"body is not UTF-8: {e}") from None
    except json.JSONDecodeError as e:
        raise BadMessage(f"body is not JSON: {e}") from None
    except RecursionError:
        raise BadMessage("body is JSON nested too deeply") from None
