"""The services' log lines: plain text (the default) or one JSON object per line, never a secret.

``log_format = "json"`` (``NEUAVATAR_LOG_FORMAT=json``) writes each record as
``{"time", "level", "logger", "message", "job_id", "stage", "exception"}`` on one line, for a log
collector to parse; the last three only when known. A record knows its job from ``extra=`` (the
queue worker's lines) or from :func:`job_context`, which a stage worker holds while it handles a job,
so every line logged in that thread, the library's included, names the job.

Both formats replace the service's secrets (the broker's password, the S3 keys, the API token)
with ``***`` wherever they would appear, a library's exception message included: settings are
never logged with them, and this catches what a third party might echo back.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Literal

__all__ = ["LogFormat", "JsonFormatter", "TextFormatter", "job_context", "configure_logging"]

LogFormat = Literal["text", "json"]
_HIDDEN = "***"
_TEXT = "%(levelname)s %(message)s"  # what `neuavatar` prints without a service (cli.main)
_job: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("neuavatar_job", default={})


@contextlib.contextmanager
def job_context(job_id: str, stage: str) -> Iterator[None]:
    """Within the block, log records of this thread carry ``job_id`` and ``stage``."""
    token = _job.set({"job_id": job_id, "stage": stage})
    try:
        yield
    finally:
        _job.reset(token)


class _Redacting(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = (), fmt: str | None = None) -> None:
        super().__init__(fmt)
        # Longest first, so that a secret containing another is hidden whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _HIDDEN)
        return text


class TextFormatter(_Redacting):
    """``LEVEL message`` (and the traceback), secrets hidden."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets, _TEXT)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(_Redacting):
    """One JSON object per record, on one line (newlines inside values are escaped), secrets hidden."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name, "message": self.redact(record.getMessage())}
        context = _job.get()
        for name in ("job_id", "stage"):
            value = getattr(record, name, None) or context.get(name)
            if value:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        elif record.stack_info:
            line["exception"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False)


def configure_logging(log_format: LogFormat, secrets: Iterable[str] = ()) -> None:
    """Format every record of this process as ``log_format``, hiding ``secrets``: the root logger's
    handlers get the formatter (one handler on stderr if it has none), and Python warnings go
    through logging (so that in JSON mode they are JSON lines too).

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be 'text' or 'json', got {log_format!r}")
    formatter = JsonFormatter(secrets) if log_format == "json" else TextFormatter(secrets)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    logging.captureWarnings(True)
