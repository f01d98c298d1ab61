"""One typed ``ServiceSettings`` for every service: broker, object store, gRPC API and the rest.

Precedence, lowest first: the defaults, a TOML (or JSON) file (``--config``), environment variables,
flags. The file has a table per section (``[broker]``, ``[storage]``, ``[api]``) and the other
settings at its top level. The environment names are docs/services.md's:

=============================  =========================================================
``NEUAVATAR_BROKER_<FIELD>``   :class:`~neuavatar.messaging.BrokerSettings` (``_URL``, ``_PREFIX``, ...)
``NEUAVATAR_S3_<FIELD>``       :class:`~neuavatar.storage.StorageSettings` (``_ENDPOINT``, ``_ACCESS_KEY``,
                               ``_SECRET_KEY``, ``_BUCKET``, ...)
``NEUAVATAR_API_<FIELD>``      :class:`~neuavatar.api.ApiSettings` (``_HOST``, ``_PORT``, ``_TOKEN`` or
                               ``_TOKEN_FILE``, ...)
``NEUAVATAR_<FIELD>``          the top-level fields (``NEUAVATAR_METRICS_PORT``, ``NEUAVATAR_WORK_DIR``,
                               ``NEUAVATAR_DEVICE``, ``NEUAVATAR_PRESET``, ...)
=============================  =========================================================

Secrets (the broker URL's password, the S3 keys, the API token) never appear in ``repr`` or in
:meth:`ServiceSettings.public_dict`, which is what is logged and saved with a job's outputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from neuavatar.api.settings import ApiSettings
from neuavatar.config import env_overrides, from_dict, load_file, merge, to_dict
from neuavatar.errors import ConfigError
from neuavatar.messaging import BrokerSettings
from neuavatar.presets import DEFAULT_PRESET, PRESETS
from neuavatar.storage import StorageSettings

__all__ = ["ServiceSettings", "load_settings", "ENV_PREFIX", "SECTION_ENV_PREFIXES"]

ENV_PREFIX = "NEUAVATAR_"
SECTION_ENV_PREFIXES = {"broker": "NEUAVATAR_BROKER_", "storage": "NEUAVATAR_S3_", "api": "NEUAVATAR_API_"}
"""Environment prefix of each section (docs/services.md)."""

_HIDDEN = "***"


@dataclass(frozen=True)
class ServiceSettings:
    """Everything a NeuAvatar service is configured with, validated on construction.

    Raises:
        ConfigError: a value out of range (so a service stops at start-up, not at its first job).
    """

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    """RabbitMQ: URL (with its password), name prefix, prefetch, attempts per job."""
    storage: StorageSettings = field(default_factory=StorageSettings)
    """The S3 object store: endpoint, keys, bucket."""
    api: ApiSettings = field(default_factory=ApiSettings)
    """The gRPC server: host, port, token, TLS."""
    metrics_port: int = 9464
    """Port of the Prometheus metrics endpoint (``/metrics``, on the API's host); 0: a free one."""
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "neuavatar")
    """Scratch space: each worker has a folder under ``scratch/`` for its jobs (a dead worker's is removed by
    the next to start); the renderer caches avatars here."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the tracker, trainer and renderer compute (``auto``: the GPU when there is one)."""
    preset: str = DEFAULT_PRESET
    """The run preset of jobs whose options name none (``gpu`` or ``cpu-smoke``)."""
    max_upload_bytes: int = 2 * 1024**3
    """The largest video CreateAvatar accepts (RESOURCE_EXHAUSTED above it)."""
    progress_interval_seconds: float = 2.0
    """At most one progress event and one job-record update per job this often."""
    checkpoint_upload_seconds: float = 60.0
    """The trainer uploads its resumable checkpoint at most this often (0: every one it writes)."""
    stop_timeout_seconds: float = 30.0
    """On SIGTERM the job in hand stops at its next progress report and goes back to the broker; this
    is how long the service waits for that before it exits anyway (the broker redelivers the job
    either way, and the trainer resumes from its last uploaded checkpoint)."""
    render_cache_size: int = 4
    """Avatars the renderer keeps loaded."""
    render_compile: bool = True
    """On a GPU, fuse each avatar's work before the rasterizer with ``torch.compile`` when the
    renderer loads it: single frames ~1,100 frames/s instead of ~850 on an H100, for ~45 s of
    loading the first time on a machine and ~8 s once inductor's cache (``work_dir/inductor``,
    or ``TORCHINDUCTOR_CACHE_DIR``) holds the kernels."""
    log_format: Literal["text", "json"] = "text"
    """``text`` (``LEVEL message``) or ``json``: one object per line with time, level, logger, message, and
    job_id and stage where known (``NEUAVATAR_LOG_FORMAT``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must lie in 0..65535, got {self.metrics_port}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.max_upload_bytes < 1:
            raise ConfigError(f"max_upload_bytes must be positive, got {self.max_upload_bytes}")
        for name in ("progress_interval_seconds", "checkpoint_upload_seconds", "stop_timeout_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.render_cache_size < 1:
            raise ConfigError(f"render_cache_size must be at least 1, got {self.render_cache_size}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be 'text' or 'json', got {self.log_format!r}")

    def secrets(self) -> list[str]:
        """The secret values (the broker URL's password, the S3 keys, the API token) that are set."""
        return [s for s in (urlsplit(self.broker.url).password, self.storage.access_key, self.storage.secret_key,
                            self.api.token) if s]

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data without secrets: what is logged and saved with a job's outputs."""
        data = to_dict(self)
        data["broker"]["url"] = self.broker.safe_url
        data["storage"]["access_key"] = data["storage"]["secret_key"] = _HIDDEN
        data["api"]["token"] = _HIDDEN if self.api.token else None
        return data


def load_settings(file: Path | str | None = None, *, environ: Mapping[str, str] | None = None,
                  flags: Mapping[str, Any] | None = None) -> ServiceSettings:
    """Settings from the defaults, then ``file``, then the environment, then ``flags``.

    Args:
        file: a TOML or JSON file (``[broker]``, ``[storage]``, ``[api]`` tables; other keys at the top).
        environ: the environment to read (default ``os.environ``).
        flags: values from the command line, shaped like the file (``{"api": {"port": 50052}}``,
            ``{"metrics_port": 9465}``); None values are ignored.

    Raises:
        ConfigError: a file that cannot be read, an unknown setting, a value of the wrong type or
            out of range, or both ``NEUAVATAR_API_TOKEN`` and ``NEUAVATAR_API_TOKEN_FILE``.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if file is not None:
        data = merge(data, load_file(Path(file)))
    data = merge(data, _from_env(env))
    if flags:
        data = merge(data, _drop_none(flags))
    where = f"settings ({file})" if file is not None else "settings"
    try:
        return from_dict(ServiceSettings, data, where=where)
    except ConfigError as e:  # a message may quote a value: never a secret one
        raise ConfigError(_scrub(str(e), data)) from None


def _scrub(text: str, data: Mapping[str, Any]) -> str:
    """``text`` with every secret value found in ``data`` replaced by ``***``."""
    url = str((data.get("broker") or {}).get("url") or "")
    secrets = [urlsplit(url).password or "" if url else "",
               *(str((data.get("storage") or {}).get(k) or "") for k in ("access_key", "secret_key")),
               str((data.get("api") or {}).get("token") or "")]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    sections = {"broker": BrokerSettings, "storage": StorageSettings, "api": ApiSettings}
    for name, cls in sections.items():
        values = env_overrides(cls, SECTION_ENV_PREFIXES[name], env)
        values = {k: v for k, v in values.items() if v != ""}
        if values:
            found[name] = values
    token_file = env.get(SECTION_ENV_PREFIXES["api"] + "TOKEN_FILE")
    if token_file:
        if found.get("api", {}).get("token"):
            raise ConfigError("set NEUAVATAR_API_TOKEN or NEUAVATAR_API_TOKEN_FILE, not both")
        try:
            found.setdefault("api", {})["token"] = Path(token_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the API token from NEUAVATAR_API_TOKEN_FILE={token_file}: "
                              f"{e.strerror or e}") from None
    for f in fields(ServiceSettings):
        if f.name in sections:
            continue
        value = env.get(ENV_PREFIX + f.name.upper())
        if value:
            found[f.name] = value
    return found


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
