"""Where the broker is and how the services talk to it: one typed, validated settings object.

The names of queues and exchanges come from here, prefixed, so that tests (or two deployments on
one broker) can use their own namespace without touching the production topology. The password
in ``url`` never appears in ``repr`` or in log lines: use :attr:`BrokerSettings.safe_url`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import pika

from neuavatar.errors import ConfigError

__all__ = ["BrokerSettings", "backoff_delays"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class BrokerSettings:
    """How to reach RabbitMQ and how hard to try.

    Raises:
        ConfigError: a value is out of range, the URL is not amqp(s)://, or the prefix is not a
            dotted name.
    """

    url: str = field(default="amqp://guest:guest@127.0.0.1:5672/%2F", repr=False)
    """AMQP URL with login and vhost (``%2F`` is the default vhost ``/``)."""
    prefix: str = "neuavatar"
    """First part of every queue and exchange name (``{prefix}.jobs.train``); tests use a unique one."""
    prefetch: int = 1
    """Unacked messages a worker holds at once; 1 for GPU stages, so that jobs spread over workers."""
    max_attempts: int = 3
    """Handler runs per message before it is dead-lettered (1 = no retry)."""
    heartbeat_seconds: int = 30
    """AMQP heartbeat; a dead peer is noticed within about twice this."""
    connect_timeout_seconds: float = 5.0
    """Per connection attempt (TCP and AMQP handshake)."""
    reconnect_initial_seconds: float = 0.25
    """First wait after a lost or refused connection; doubles per failure..."""
    reconnect_max_seconds: float = 5.0
    """...up to this."""
    publish_deadline_seconds: float = 60.0
    """How long a publish keeps retrying through a broker outage before :class:`BrokerUnavailable`."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigError(f"broker url must look like amqp://user:password@host:5672/vhost, got {self.safe_url!r}")
        if not _NAME.match(self.prefix):
            raise ConfigError(f"prefix must be a dotted name of letters, digits, '-' and '_', got {self.prefix!r}")
        for name in ("prefetch", "max_attempts", "heartbeat_seconds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("connect_timeout_seconds", "reconnect_initial_seconds", "reconnect_max_seconds",
                     "publish_deadline_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")

    def __repr__(self) -> str:
        return (f"BrokerSettings(url={self.safe_url!r}, prefix={self.prefix!r}, prefetch={self.prefetch}, "
                f"max_attempts={self.max_attempts})")

    @property
    def safe_url(self) -> str:
        """``url`` with the password replaced by ``***``, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    def job_queue(self, stage: str) -> str:
        """The durable queue of one stage's jobs: ``{prefix}.jobs.{stage}``."""
        return f"{self.prefix}.jobs.{stage}"

    @property
    def dead_exchange(self) -> str:
        """Fanout exchange that dead messages go to: ``{prefix}.dead``."""
        return f"{self.prefix}.dead"

    @property
    def dead_letter_queue(self) -> str:
        """The durable queue behind :attr:`dead_exchange`: ``{prefix}.dead-letter``."""
        return f"{self.prefix}.dead-letter"

    @property
    def events_exchange(self) -> str:
        """Topic exchange of job events: ``{prefix}.events``."""
        return f"{self.prefix}.events"

    def parameters(self) -> pika.URLParameters:
        """pika's connection parameters: one attempt each (the callers retry with backoff)."""
        params = pika.URLParameters(self.url)
        params.heartbeat = self.heartbeat_seconds
        params.connection_attempts = 1
        params.socket_timeout = self.connect_timeout_seconds
        params.stack_timeout = self.connect_timeout_seconds * 2
        params.blocked_connection_timeout = self.publish_deadline_seconds
        params.client_properties = {"connection_name": f"neuavatar:{self.prefix}"}
        return params


def backoff_delays(settings: BrokerSettings) -> Iterator[float]:
    """Seconds to wait before each reconnection: exponential, capped, with +-20 % jitter.

    The jitter keeps a fleet of workers from reconnecting in lockstep after a broker restart.
    """
    delay = settings.reconnect_initial_seconds
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, settings.reconnect_max_seconds)
