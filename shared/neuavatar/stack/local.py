"""The whole NeuAvatar stack on one machine, without Docker: ``neuavatar stack up|status|down``.

:func:`stack_up` starts, in order, an isolated RabbitMQ node, a SeaweedFS S3 server (with keys
generated for this stack), Prometheus (scraping the services' metrics ports) and the four services
as ``neuavatar serve NAME`` child processes, each on its own API and metrics port; it waits until
each part is healthy and, when one is not, stops everything it had started. :func:`stack_down`
stops exactly the processes the stack started (by the pid files in its directory, each checked
against the process's start time), and nothing else. Everything lives in one directory:

| path | what |
|---|---|
| ``stack.json`` | the parts, their ports and addresses, the log files (see :class:`StackState`) |
| ``credentials.json`` | the S3 keys (mode 0600; never printed) |
| ``rabbitmq/`` | the broker's data, logs, config and pid files (:class:`~neuavatar.stack.rabbit.RabbitNode`) |
| ``seaweedfs/`` | the object store's data, identities, log and pid (:class:`~neuavatar.stack.seaweed.SeaweedServer`) |
| ``prometheus/`` | ``prometheus.yml``, the TSDB, log and pid (:class:`~neuavatar.stack.prometheus.PrometheusServer`) |
| ``services/`` | ``NAME.log``, ``NAME.pid`` and a work directory per service |

The data survive ``down`` then ``up``: the next ``up`` reuses the node name and, where they are
still free, the same ports.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from neuavatar.errors import NeuAvatarError
from neuavatar.stack.process import Managed, free_port, log_tail, port_open
from neuavatar.stack.prometheus import PrometheusServer, prometheus_binary
from neuavatar.stack.rabbit import RabbitMQNotInstalled, RabbitNode, ensure_rabbitmq_installed
from neuavatar.stack.seaweed import SeaweedPorts, SeaweedServer, weed_binary
from neuavatar.storage.settings import StorageSettings

__all__ = ["SERVICES", "PORT_NAMES", "StackError", "StackOptions", "ServicePorts", "StackState", "PartStatus",
           "default_stack_dir", "load_state", "parse_ports", "grpc_health", "stack_up",
           "stack_status", "stack_down", "format_table"]

SERVICES = ("preprocess", "tracker", "trainer", "renderer")
"""The services, in the order they start."""

PORT_NAMES = ("amqp", "s3", "prometheus", *SERVICES, *(f"{s}-metrics" for s in SERVICES))
"""The names ``--ports NAME=PORT`` accepts: the broker's AMQP port, S3's, Prometheus's, each
service's API port, and each service's metrics port."""

STATE_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.json"
_STATE_VERSION = 1
_HOST = "127.0.0.1"


class StackError(NeuAvatarError):
    """The local stack could not be started, inspected or stopped; the message says why and what to do."""


def default_stack_dir() -> Path:
    """``$NEUAVATAR_STACK_DIR``, else ``~/.neuavatar/stack``."""
    return Path(os.environ.get("NEUAVATAR_STACK_DIR") or Path.home() / ".neuavatar" / "stack")


def parse_ports(pairs: Iterator[str] | tuple[str, ...] | list[str]) -> dict[str, int]:
    """``["amqp=5673", "renderer=50052"]`` -> ``{"amqp": 5673, "renderer": 50052}``.

    Raises:
        StackError: a pair is not ``NAME=PORT``, the name is not one of :data:`PORT_NAMES`, the
            port is outside 1..65535, or two names share a port.
    """
    ports: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in PORT_NAMES:
            raise StackError(f"--ports takes NAME=PORT with NAME one of {', '.join(PORT_NAMES)}; got {pair!r}")
        try:
            port = int(value)
        except ValueError:
            raise StackError(f"--ports {name}= needs a port number, got {value!r}") from None
        if not 1 <= port <= 65535:
            raise StackError(f"--ports {name}: {port} is not a TCP port (1..65535)")
        ports[name] = port
    clashes = {p for p in ports.values() if list(ports.values()).count(p) > 1}
    if clashes:
        raise StackError(f"--ports gives port {min(clashes)} to more than one part")
    return ports


@dataclass(frozen=True)
class StackOptions:
    """What :func:`stack_up` starts and how."""

    dir: Path = field(default_factory=default_stack_dir)
    """Where the stack keeps its state, data and logs."""
    preset: str = "cpu-smoke"
    """The services' default run preset (NEUAVATAR_PRESET); a job may name another."""
    device: str = "auto"
    """The services' torch device (NEUAVATAR_DEVICE): 'auto', 'cpu' or 'cuda'."""
    services: bool = True
    """Start the four services; False: the infrastructure alone (broker, S3, Prometheus)."""
    ports: Mapping[str, int] = field(default_factory=dict)
    """Fixed ports by name (:data:`PORT_NAMES`); the others are free ports chosen at start."""
    bucket: str = "neuavatar"
    """The object store's bucket (created at start)."""
    service_timeout_seconds: float = 180.0
    """How long each service may take to report SERVING (it imports torch: slow on a busy CPU)."""
    infra_timeout_seconds: float = 90.0
    """How long the broker, S3 and Prometheus may each take to answer."""
    serve_command: tuple[str, ...] | None = None
    """The command a service runs as, its name appended; None: ``python -m neuavatar serve``."""


@dataclass(frozen=True)
class ServicePorts:
    """One service's ports on 127.0.0.1."""

    api: int
    """gRPC: health, reflection and its API."""
    metrics: int
    """Prometheus metrics (``/metrics``)."""


@dataclass
class StackState:
    """What ``stack.json`` records: the ports and names a stack was started with.

    Built by :func:`stack_up` before anything starts (so that ``down`` can stop a half-started
    stack), read back by ``status``, ``down``, the next ``up`` and ``neuavatar client``.
    """

    dir: Path
    node_name: str
    amqp_port: int
    dist_port: int
    epmd_port: int
    s3_port: int
    seaweed_ports: dict[str, int]
    prometheus_port: int
    services: dict[str, ServicePorts]
    """Empty when the stack runs without services."""
    preset: str = "cpu-smoke"
    device: str = "auto"
    bucket: str = "neuavatar"
    state: Literal["starting", "up", "failed", "down"] = "starting"
    updated: str = ""
    version: int = _STATE_VERSION

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        """The AMQP URL (RabbitMQ's guest login, which the broker accepts from 127.0.0.1 only)."""
        return self.rabbit().url

    @property
    def s3_endpoint(self) -> str:
        return f"{_HOST}:{self.s3_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{_HOST}:{self.prometheus_port}"

    @property
    def api_address(self) -> str | None:
        """``host:port`` of the job API (the preprocess service), when the stack has services."""
        return f"{_HOST}:{self.services['preprocess'].api}" if "preprocess" in self.services else None

    @property
    def renderer_address(self) -> str | None:
        """``host:port`` of the Renderer API, when the stack has services."""
        return f"{_HOST}:{self.services['renderer'].api}" if "renderer" in self.services else None

    # -- the parts -----------------------------------------------------------------------------------

    def rabbit(self) -> RabbitNode:
        return RabbitNode(self.dir / "rabbitmq", self.amqp_port, self.dist_port, self.epmd_port, self.node_name)

    def seaweed(self, storage: StorageSettings | None = None) -> SeaweedServer:
        """The S3 server; ``storage``: its settings with the keys (not needed to stop or inspect it)."""
        return SeaweedServer(self.dir / "seaweedfs", storage or StorageSettings(endpoint=self.s3_endpoint),
                             SeaweedPorts(**self.seaweed_ports))

    def prometheus(self) -> PrometheusServer:
        targets = {name: f"{_HOST}:{ports.metrics}" for name, ports in self.services.items()}
        return PrometheusServer(self.dir / "prometheus", self.prometheus_port, targets)

    def service(self, name: str) -> Managed:
        return Managed(name, self.dir / "services")

    def storage_settings(self) -> StorageSettings:
        """The S3 endpoint, bucket and keys of this stack (the keys from ``credentials.json``).

        Raises:
            StackError: the credentials file is missing or unreadable.
        """
        keys = _read_credentials(self.dir)
        return StorageSettings(endpoint=self.s3_endpoint, access_key=keys["s3_access_key"],
                               secret_key=keys["s3_secret_key"], bucket=self.bucket)

    # -- the file --------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        data = asdict(self)
        data["dir"] = str(self.dir)
        data["addresses"] = {  # for people and other tools; derived, ignored when read back
            "broker": f"amqp://{_HOST}:{self.amqp_port}", "s3": f"http://{self.s3_endpoint}",
            "prometheus": self.prometheus_url, "api": self.api_address, "renderer": self.renderer_address}
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> StackState:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["dir"] = Path(values["dir"])
        values["services"] = {name: ServicePorts(**ports) for name, ports in values.get("services", {}).items()}
        return cls(**values)

    def save(self) -> None:
        self.updated = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        path = self.dir / STATE_FILE
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(partial, path)


def load_state(directory: Path) -> StackState | None:
    """The stack recorded in ``directory``, or None when there is none.

    Raises:
        StackError: ``stack.json`` exists but cannot be read.
    """
    path = Path(directory) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StackError(f"cannot read {path}: {e}") from None
    if data.get("version") != _STATE_VERSION:
        raise StackError(f"{path} was written by another version of NeuAvatar (format {data.get('version')!r}); "
                         f"stop that stack with the NeuAvatar that started it, or remove the file")
    try:
        return StackState.from_json(data)
    except (KeyError, TypeError, ValueError) as e:
        raise StackError(f"{path} is damaged ({e}); stop what runs by hand and remove the file") from None


# -- up ------------------------------------------------------------------------------------------------

def stack_up(options: StackOptions, report: Callable[[str], None] = lambda line: None) -> StackState:
    """Start the stack in ``options.dir`` and wait until every part is healthy; its state.

    ``report`` sees a line per part as it becomes ready. On failure (or Ctrl-C) every part that
    had started is stopped again before the error propagates.

    Raises:
        StackError: a stack already runs there, a part is not installed, a fixed port is taken,
            or a part did not become healthy (the message names it and ends with its log's last lines).
    """
    directory = Path(options.dir).expanduser().resolve()
    _check_installed()
    _make_private_dir(directory)
    with _locked(directory):
        previous = load_state(directory)
        if previous is not None and (running := _running_parts(previous)):
            raise StackError(f"a stack already runs in {directory} ({', '.join(running)}); "
                             f"see `neuavatar stack status`, or stop it with `neuavatar stack down`")
        credentials = _credentials(directory)
        state = _plan(directory, options, previous)
        state.save()
        part = "rabbitmq"
        try:
            node = state.rabbit()
            _require_free(part, {"amqp": state.amqp_port, "amqp-dist": state.dist_port, "epmd": state.epmd_port})
            seconds = node.start(timeout=options.infra_timeout_seconds)
            report(f"rabbitmq    ready in {seconds:4.1f} s  amqp://{_HOST}:{state.amqp_port}")

            part = "seaweedfs"
            storage = StorageSettings(endpoint=state.s3_endpoint, access_key=credentials["s3_access_key"],
                                      secret_key=credentials["s3_secret_key"], bucket=state.bucket)
            _require_free(part, {"s3": state.s3_port, **state.seaweed_ports})
            seconds = state.seaweed(storage).start(timeout=options.infra_timeout_seconds)
            _ensure_bucket(storage)
            report(f"seaweedfs   ready in {seconds:4.1f} s  http://{state.s3_endpoint} (bucket {state.bucket})")

            part = "prometheus"
            _require_free(part, {"prometheus": state.prometheus_port})
            seconds = state.prometheus().start(timeout=options.infra_timeout_seconds)
            report(f"prometheus  ready in {seconds:4.1f} s  {state.prometheus_url}")

            if state.services:
                part = "services"
                for name, ports in state.services.items():
                    _require_free(name, {name: ports.api, f"{name}-metrics": ports.metrics})
                started = time.monotonic()
                for name in state.services:
                    part = name
                    argv = [*(options.serve_command or (sys.executable, "-m", "neuavatar", "serve")), name]
                    state.service(name).start(argv, env=_service_env(state, name, storage),
                                              cwd=directory / "services")
                for name, ports in state.services.items():
                    part = name
                    _wait_serving(state.service(name), ports.api, started + options.service_timeout_seconds)
                    report(f"{name:<11} SERVING after {time.monotonic() - started:4.1f} s  {_HOST}:{ports.api}")
        except BaseException as error:
            stopped = _stop_all(state)
            state.state = "failed"
            state.save()
            if not isinstance(error, Exception):  # Ctrl-C: rolled back; let it through
                raise
            undone = f"; stopped again: {', '.join(stopped)}" if stopped else ""
            if isinstance(error, StackError):
                raise StackError(f"{error}{undone}") from None
            raise StackError(f"{part} did not start: {error}{undone}") from None
        state.state = "up"
        state.save()
        return state


def _check_installed() -> None:
    try:
        ensure_rabbitmq_installed()
        weed_binary()
        prometheus_binary()
    except RabbitMQNotInstalled as e:
        raise StackError(str(e)) from None


def _make_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise StackError(f"cannot create the stack directory {directory}: {e.strerror or e}") from None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One ``stack`` command at a time per directory."""
    with open(directory / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `neuavatar stack` command is working on {directory}; "
                             "wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _credentials(directory: Path) -> dict[str, str]:
    """The stack's S3 keys: read from ``credentials.json``, or generated and written there (0600)."""
    path = directory / CREDENTIALS_FILE
    if path.exists():
        return _read_credentials(directory)
    keys = {"s3_access_key": f"neuavatar-{secrets.token_hex(6)}", "s3_secret_key": secrets.token_urlsafe(30)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=2)
    return keys


def _read_credentials(directory: Path) -> dict[str, str]:
    path = Path(directory) / CREDENTIALS_FILE
    try:
        os.chmod(path, 0o600)  # whatever happened to it since, keep it private
        keys = json.loads(path.read_text())
        if not (keys.get("s3_access_key") and keys.get("s3_secret_key")):
            raise ValueError("a key is missing")
        return keys
    except (OSError, ValueError, AttributeError) as e:
        raise StackError(f"cannot read the stack's credentials from {path} ({type(e).__name__}); remove the file "
                         "to generate new ones (the object store's data then needs the old keys)") from None


def _plan(directory: Path, options: StackOptions, previous: StackState | None) -> StackState:
    """Ports for every part: fixed ones from ``options.ports``, else the previous stack's where
    free, else fresh free ones; all distinct."""
    fixed = dict(options.ports)
    taken: set[int] = set(fixed.values())

    def pick(name: str | None, before: int | None) -> int:
        if name is not None and name in fixed:
            return fixed[name]
        if before and before not in taken and not port_open(before):
            taken.add(before)
            return before
        while (port := free_port(_HOST)) in taken:
            pass
        taken.add(port)
        return port

    p = previous
    amqp = pick("amqp", p and p.amqp_port)
    dist = pick(None, p and p.dist_port)
    epmd = pick(None, p and p.epmd_port)
    s3 = pick("s3", p and p.s3_port)
    seaweed = {f.name: pick(None, p and p.seaweed_ports.get(f.name)) for f in fields(SeaweedPorts)}
    prometheus = pick("prometheus", p and p.prometheus_port)
    services = {}
    if options.services:
        for name in SERVICES:
            before = p.services.get(name) if p is not None else None
            services[name] = ServicePorts(api=pick(name, before and before.api),
                                          metrics=pick(f"{name}-metrics", before and before.metrics))
    node_name = p.node_name if p is not None else f"neuavatar-{secrets.token_hex(5)}@localhost"
    return StackState(dir=directory, node_name=node_name, amqp_port=amqp, dist_port=dist, epmd_port=epmd,
                      s3_port=s3, seaweed_ports=seaweed, prometheus_port=prometheus, services=services,
                      preset=options.preset, device=options.device, bucket=options.bucket)


def _require_free(part: str, ports: Mapping[str, int]) -> None:
    for name, port in ports.items():
        if port_open(port, _HOST):
            raise StackError(f"cannot start {part}: port {port} ({name}) on {_HOST} is already in use by another "
                             f"program; choose another one with --ports {name}=PORT, or leave it out to get a free one"
                             if name in PORT_NAMES else
                             f"cannot start {part}: port {port} ({name}) on {_HOST} is already in use; run `up` again "
                             "to get other ports")


def _ensure_bucket(storage: StorageSettings) -> None:
    from neuavatar.storage import ObjectStore

    ObjectStore(storage).ensure_bucket()


def _service_env(state: StackState, name: str, storage: StorageSettings) -> dict[str, str]:
    """The service's environment (docs/services.md, "Running a service"). Inherited ``NEUAVATAR_*``
    variables are left out: the stack alone configures its services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUAVATAR_")}
    work = state.dir / "services" / name
    work.mkdir(parents=True, exist_ok=True)
    env.update({
        "PYTHONUNBUFFERED": "1",
        "NEUAVATAR_BROKER_URL": state.broker_url,
        "NEUAVATAR_S3_ENDPOINT": storage.endpoint,
        "NEUAVATAR_S3_ACCESS_KEY": storage.access_key,
        "NEUAVATAR_S3_SECRET_KEY": storage.secret_key,
        "NEUAVATAR_S3_BUCKET": storage.bucket,
        "NEUAVATAR_API_HOST": _HOST,
        "NEUAVATAR_API_PORT": str(state.services[name].api),
        "NEUAVATAR_METRICS_PORT": str(state.services[name].metrics),
        "NEUAVATAR_WORK_DIR": str(work),
        "NEUAVATAR_DEVICE": state.device,
        "NEUAVATAR_PRESET": state.preset,
    })
    return env


def _wait_serving(process: Managed, port: int, deadline: float) -> None:
    last = "unreachable"
    while time.monotonic() < deadline:
        if process.pid() is None:
            raise StackError(f"the {process.name} service exited during start-up{log_tail(process.log_file)}")
        last = grpc_health(port)
        if last == "SERVING":
            return
        time.sleep(0.25)
    raise StackError(f"the {process.name} service was not SERVING in time (health: {last})"
                     f"{log_tail(process.log_file)}")


def grpc_health(port: int, host: str = _HOST, timeout: float = 2.0) -> str:
    """The gRPC health of the whole server on ``host:port``: SERVING, NOT_SERVING, ... or "unreachable"."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout)
        except grpc.RpcError:
            return "unreachable"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


# -- status --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PartStatus:
    """One part of a running (or stopped) stack, as ``stack status`` shows it."""

    name: str
    pid: int | None
    """None: not running."""
    address: str
    health: str
    """'ready' / 'not ready' for the infrastructure; the gRPC status (SERVING, NOT_SERVING,
    unreachable) for a service."""
    ok: bool
    log: Path


def stack_status(state: StackState) -> list[PartStatus]:
    """Every part of ``state``: whether its process lives, its port answers and, for a service,
    its gRPC health."""
    parts = []
    node = state.rabbit()
    pid = Managed("rabbitmq-server", node.workdir).pid()
    up = pid is not None and port_open(state.amqp_port)
    parts.append(PartStatus("rabbitmq", pid, f"amqp://{_HOST}:{state.amqp_port}", "ready" if up else "down", up,
                            node.workdir / "rabbitmq-server.log"))
    seaweed = state.seaweed()
    pid = seaweed.pid
    up = pid is not None and port_open(state.s3_port)
    parts.append(PartStatus("seaweedfs", pid, f"http://{state.s3_endpoint}", "ready" if up else "down", up,
                            seaweed.log_file))
    prometheus = state.prometheus()
    pid = prometheus.pid
    up = pid is not None and prometheus.ready()
    parts.append(PartStatus("prometheus", pid, state.prometheus_url, "ready" if up else "down", up,
                            prometheus.log_file))
    for name, ports in state.services.items():
        process = state.service(name)
        pid = process.pid()
        health = grpc_health(ports.api) if pid is not None else "unreachable"
        metrics = "metrics up" if port_open(ports.metrics) else "metrics down"
        parts.append(PartStatus(name, pid, f"{_HOST}:{ports.api} (metrics :{ports.metrics})",
                                f"{health}, {metrics}", pid is not None and health == "SERVING", process.log_file))
    return parts


def _running_parts(state: StackState) -> list[str]:
    names = []
    if any(Managed(n, state.dir / "rabbitmq").pid() is not None for n in ("rabbitmq-server", "epmd")):
        names.append("rabbitmq")
    if state.seaweed().pid is not None:
        names.append("seaweedfs")
    if state.prometheus().pid is not None:
        names.append("prometheus")
    names += [name for name in SERVICES if state.service(name).pid() is not None]
    return names


# -- down ----------------------------------------------------------------------------------------------

def stack_down(directory: Path) -> list[str]:
    """Stop the stack recorded in ``directory`` (services first, the broker last); the names of
    the parts that were running. Safe to call when nothing runs.

    Raises:
        StackError: ``stack.json`` is unreadable, or another ``stack`` command holds the directory.
    """
    directory = Path(directory).expanduser().resolve()
    state = load_state(directory)
    if state is None:
        return []
    with _locked(directory):
        stopped = _stop_all(state)
        state.state = "down"
        state.save()
    return stopped


def _stop_all(state: StackState) -> list[str]:
    """Stop every part whose pid file names a live process it started, in reverse order of start."""
    # The services stop side by side (each finishes or requeues the job in hand on SIGTERM).
    running = [state.service(name) for name in SERVICES if state.service(name).pid() is not None]
    if running:
        with ThreadPoolExecutor(len(running)) as pool:
            list(pool.map(lambda process: process.stop(timeout=40.0), running))  # their own limit: 30 s
    stopped = [process.name for process in running]
    for name, stop in (("prometheus", lambda: state.prometheus().stop()), ("seaweedfs", lambda: state.seaweed().stop()),
                       ("rabbitmq", lambda: _stop_rabbit(state))):
        with contextlib.suppress(Exception):
            if stop():
                stopped.append(name)
    return stopped


def _stop_rabbit(state: StackState) -> bool:
    node = state.rabbit()
    ran = any(Managed(n, node.workdir).pid() is not None for n in ("rabbitmq-server", "epmd"))
    if ran:
        node.stop()
    return ran


# -- printing ------------------------------------------------------------------------------------------

def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Rows under a header, in left-aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])
