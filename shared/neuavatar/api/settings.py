"""What every gRPC server of NeuAvatar is configured with: address, token, TLS, message size.

One typed, validated dataclass, read from ``NEUAVATAR_API_*`` environment variables by
:meth:`ApiSettings.from_env` at startup, so that a bad value stops the service before it serves
(not at the first request), and the token never appears in a repr or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from neuavatar.errors import ConfigError

__all__ = ["ApiSettings", "DEFAULT_PORT"]

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class ApiSettings:
    """Where and how a server listens.

    Raises:
        ConfigError: (on construction) a port outside 0..65535, only one of the TLS paths, a TLS
            file that does not exist, an empty token, or a message size that is not positive.
    """

    host: str = "127.0.0.1"
    """Interface to bind; ``0.0.0.0`` (or ``[::]``) in a container."""
    port: int = DEFAULT_PORT
    """TCP port; 0 picks a free one (the server reports which)."""
    token: str | None = field(default=None, repr=False)
    """When set, every call but health checks must send ``authorization: Bearer <token>``."""
    tls_cert: Path | None = None
    """PEM certificate chain; with ``tls_key``, the server speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    max_message_bytes: int = 32 * 1024 * 1024
    """Largest message either way (a raw RGB frame at 1024² is 3 MiB; uploads are chunked)."""
    grace_seconds: float = 5.0
    """On shutdown, how long in-flight calls may take to finish."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"the API port must lie in 0..65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key (NEUAVATAR_API_TLS_CERT, NEUAVATAR_API_TLS_KEY)")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the API token is empty: set a real token or none at all")
        if self.max_message_bytes <= 0:
            raise ConfigError(f"max_message_bytes must be positive, got {self.max_message_bytes}")
        if self.grace_seconds < 0:
            raise ConfigError(f"grace_seconds must not be negative, got {self.grace_seconds}")

    @property
    def address(self) -> str:
        """``host:port`` as gRPC takes it."""
        return f"{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = "NEUAVATAR_API_") -> ApiSettings:
        """Settings from ``{prefix}HOST``, ``PORT``, ``TOKEN`` or ``TOKEN_FILE`` (a file holding it,
        as a mounted secret), ``TLS_CERT``, ``TLS_KEY``, ``MAX_MESSAGE_BYTES``, ``GRACE_SECONDS``;
        unset ones keep their defaults.

        Raises:
            ConfigError: a value that is not a number where one is needed, both TOKEN and
                TOKEN_FILE, an unreadable token file, or anything ``ApiSettings`` refuses.
        """
        env = os.environ if environ is None else environ
        get = lambda name: env.get(prefix + name) or None  # noqa: E731
        values: dict = {}
        if get("HOST"):
            values["host"] = get("HOST")
        for name, kind in (("PORT", int), ("MAX_MESSAGE_BYTES", int), ("GRACE_SECONDS", float)):
            if get(name):
                try:
                    values[name.lower()] = kind(get(name))
                except ValueError:
                    raise ConfigError(f"{prefix}{name} must be a number, got {get(name)!r}") from None
        if get("TOKEN") and get("TOKEN_FILE"):
            raise ConfigError(f"set {prefix}TOKEN or {prefix}TOKEN_FILE, not both")
        if get("TOKEN"):
            values["token"] = get("TOKEN")
        elif get("TOKEN_FILE"):
            try:
                values["token"] = Path(get("TOKEN_FILE")).read_text().strip()
            except OSError as e:
                raise ConfigError(f"cannot read the API token from {prefix}TOKEN_FILE={get('TOKEN_FILE')}: {e}") from e
        for name in ("TLS_CERT", "TLS_KEY"):
            if get(name):
                values[name.lower()] = Path(get(name))
        return cls(**values)
