"""Where the object store is and how to talk to it: one typed dataclass shared by every service.

The keys are credentials: they are kept out of ``repr`` (and so out of logs and tracebacks that
print the settings) and out of every error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from neuavatar.errors import ConfigError

__all__ = ["MiB", "MIN_PART_SIZE_BYTES", "MAX_PART_SIZE_BYTES", "StorageSettings"]

MiB = 1024 * 1024
MIN_PART_SIZE_BYTES = 5 * MiB  # S3's smallest multipart part (all but the last)
MAX_PART_SIZE_BYTES = 5 * 1024 * MiB  # S3's largest part, and its largest single PUT

_ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class StorageSettings:
    """The S3 endpoint, credentials and transfer tuning of an :class:`~neuavatar.storage.ObjectStore`.

    The defaults match the local stack (``neuavatar.stack.seaweed``) on 127.0.0.1; the services
    build one from their validated ``Settings``.

    Raises:
        ConfigError: a value is out of range (checked on construction, so a service fails at start-up).
    """

    endpoint: str = "127.0.0.1:8333"
    """``host:port`` of the S3 API, without a scheme (``secure`` picks http or https)."""
    access_key: str = field(default="neuavatar", repr=False)
    """S3 access key id. The default is for the local stack only."""
    secret_key: str = field(default="neuavatar-local-only", repr=False)
    """S3 secret key: never printed. The default is for the local stack only."""
    bucket: str = "neuavatar"
    """The one bucket that holds every key of docs/services.md."""
    secure: bool = False
    """Use https."""
    region: str = "us-east-1"
    """Signing region; set, so that the client never asks the server for the bucket's location."""
    multipart_threshold_bytes: int = 16 * MiB
    """Objects larger than this go up in a multipart upload; smaller ones in one PUT."""
    part_size_bytes: int = 16 * MiB
    """Size of each multipart part (S3 allows 5 MiB to 5 GiB)."""
    retry_attempts: int = 6
    """Tries per operation when the server cannot be reached (1 = no retry)."""
    retry_initial_delay_seconds: float = 0.25
    """Wait before the first retry; doubled after each failed try."""
    retry_max_delay_seconds: float = 4.0
    """Cap on the wait between two tries."""
    connect_timeout_seconds: float = 5.0
    """TCP connect timeout of one request."""
    read_timeout_seconds: float = 120.0
    """Longest silence while reading one response before the try counts as failed."""

    def __post_init__(self) -> None:
        if not _ENDPOINT.match(self.endpoint):
            raise ConfigError(f"storage endpoint must be 'host:port' without a scheme, got {self.endpoint!r}")
        if not _BUCKET.match(self.bucket):
            raise ConfigError(f"storage bucket must be 3-63 lowercase letters, digits, '.' or '-', got {self.bucket!r}")
        if not self.access_key or not self.secret_key:
            raise ConfigError("storage access_key and secret_key must not be empty")
        if not MIN_PART_SIZE_BYTES <= self.part_size_bytes <= MAX_PART_SIZE_BYTES:
            raise ConfigError(f"storage part_size_bytes must be between 5 MiB and 5 GiB, got {self.part_size_bytes}")
        if not 0 <= self.multipart_threshold_bytes <= MAX_PART_SIZE_BYTES:
            raise ConfigError("storage multipart_threshold_bytes must be between 0 and 5 GiB, "
                              f"got {self.multipart_threshold_bytes}")
        if self.retry_attempts < 1:
            raise ConfigError(f"storage retry_attempts must be at least 1, got {self.retry_attempts}")
        if self.retry_initial_delay_seconds < 0 or self.retry_max_delay_seconds < self.retry_initial_delay_seconds:
            raise ConfigError("storage retry delays must satisfy 0 <= retry_initial_delay_seconds <= "
                              f"retry_max_delay_seconds, got {self.retry_initial_delay_seconds} and "
                              f"{self.retry_max_delay_seconds}")
        if self.connect_timeout_seconds <= 0 or self.read_timeout_seconds <= 0:
            raise ConfigError("storage timeouts must be positive")

    @property
    def host(self) -> str:
        """The endpoint's host."""
        return self.endpoint.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The endpoint's port."""
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        """The endpoint as a URL, for messages."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"
