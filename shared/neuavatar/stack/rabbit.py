"""An isolated RabbitMQ node from Debian's ``rabbitmq-server``, with all its state in one folder.

Tests and the local stack need a broker they may stop and restart without touching the machine's
own (``rabbit@localhost`` on 5672, configured by ``/etc/rabbitmq``). So each node here gets a
unique name, its own ports (AMQP, Erlang distribution, epmd) and a work dir holding its data,
logs, Erlang cookie (``HOME``) and config; ``/etc/rabbitmq/rabbitmq-env.conf`` is bypassed because
it pins ``NODENAME``. epmd runs as a separate :class:`Managed` process on its own port, so that
stopping the node stops its epmd too and nothing of it outlives :meth:`RabbitNode.stop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from neuavatar.stack.process import Managed, free_port, port_open

__all__ = ["RABBITMQ_SERVER", "INSTALL_COMMAND", "RabbitMQNotInstalled", "rabbitmq_installed",
           "ensure_rabbitmq_installed", "RabbitNode"]

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
INSTALL_COMMAND = "apt-get install -y --no-install-recommends rabbitmq-server"


class RabbitMQNotInstalled(RuntimeError):
    """Debian's ``rabbitmq-server`` package is missing; the message says how to install it."""


def rabbitmq_installed() -> bool:
    """Whether the broker's start script and Erlang's epmd are both present."""
    return RABBITMQ_SERVER.is_file() and shutil.which("epmd") is not None


def ensure_rabbitmq_installed(install: bool = False) -> Path:
    """The path of ``rabbitmq-server``, installing the Debian package first when ``install`` is set.

    apt runs only when the package is missing (a set-up script may call this on every run), as
    root or through sudo.

    Raises:
        RabbitMQNotInstalled: it is missing and ``install`` is False, or apt-get failed.
    """
    if rabbitmq_installed():
        return RABBITMQ_SERVER
    if not install:
        raise RabbitMQNotInstalled(f"RabbitMQ is not installed ({RABBITMQ_SERVER} or epmd is missing); "
                                   f"install it with: {INSTALL_COMMAND}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], INSTALL_COMMAND.split()):
        run = subprocess.run(sudo + argv, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise RabbitMQNotInstalled(f"`{' '.join(sudo + argv)}` failed with code {run.returncode}:\n"
                                       f"{run.stderr[-2000:]}")
    if not rabbitmq_installed():
        raise RabbitMQNotInstalled(f"{INSTALL_COMMAND} ran but {RABBITMQ_SERVER} is still missing")
    return RABBITMQ_SERVER


@dataclass
class RabbitNode:
    """One RabbitMQ node (and its epmd) whose data, logs and cookie all live in ``workdir``.

    The ports are the caller's choice (:func:`free_port`, or :meth:`create`), so that a restarted
    node comes back on the same ports with the same data: durable queues and persistent messages
    survive :meth:`stop` then :meth:`start`. Login is RabbitMQ's default guest/guest, which the
    broker allows from 127.0.0.1 only.

    Args:
        workdir: holds ``mnesia/`` (data), ``log/``, the config files, pid and log files.
        amqp_port: AMQP 0-9-1 listener on 127.0.0.1.
        dist_port: Erlang distribution port of the node (used by rabbitmqctl).
        epmd_port: port of this node's own epmd.
        node_name: Erlang node name, unique by default so that nodes never collide.
    """

    workdir: Path
    amqp_port: int
    dist_port: int
    epmd_port: int
    node_name: str = field(default_factory=lambda: f"neuavatar-{uuid.uuid4().hex[:10]}@localhost")
    start_seconds: float | None = field(default=None, init=False)
    """How long the last :meth:`start` took until the broker accepted AMQP connections."""

    @classmethod
    def create(cls, workdir: Path) -> RabbitNode:
        """A node in ``workdir`` on three free ports."""
        return cls(Path(workdir), amqp_port=free_port(), dist_port=free_port(), epmd_port=free_port())

    @property
    def url(self) -> str:
        """The AMQP URL of the default vhost with the guest login."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def _server(self) -> Managed:
        return Managed("rabbitmq-server", self.workdir)

    @property
    def _epmd(self) -> Managed:
        return Managed("epmd", self.workdir)

    def running(self) -> bool:
        """Whether the node's process runs and its AMQP port answers."""
        return self._server.pid() is not None and port_open(self.amqp_port)

    def start(self, timeout: float = 90.0) -> float:
        """Start epmd and the node (unless they run) and wait for AMQP; the seconds it took.

        Raises:
            RabbitMQNotInstalled: Debian's rabbitmq-server is missing (the message says how to install it).
            RuntimeError: the node exited or did not listen in time (with its log's last lines).
        """
        server = ensure_rabbitmq_installed()
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = self._environment()
        self._epmd.start([shutil.which("epmd") or "epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                         env=env, port=self.epmd_port, timeout=15.0)
        try:
            self._server.start([str(server)], env=env, cwd=self.workdir, port=self.amqp_port, timeout=timeout)
        except RuntimeError:
            self._epmd.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self.start_seconds

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node gracefully (SIGTERM; SIGKILL after ``timeout`` s), then its epmd."""
        self._server.stop(timeout=timeout)
        deadline = time.monotonic() + timeout
        while port_open(self.amqp_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._epmd.stop(timeout=5.0)

    def kill(self) -> None:
        """SIGKILL the node as a crash would (its data stays; :meth:`start` recovers), then stop its epmd."""
        pid = self._server.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._server.stop(timeout=5.0)  # reaps it and removes the pid file
        self._epmd.stop(timeout=5.0)

    def _environment(self) -> dict[str, str]:
        """The child environment: the caller's, less any RabbitMQ/Erlang settings, plus this node's."""
        (self.workdir / "rabbitmq-env.conf").write_text("# empty: keeps /etc/rabbitmq/rabbitmq-env.conf out\n")
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text("loopback_users.guest = true\n"
                                                    "disk_free_limit.absolute = 50MB\n")
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("RABBITMQ_", "ERL_")) and k not in {"CONF_ENV_FILE", "HOME"}}
        return {
            **inherited,
            "HOME": str(self.workdir),  # the Erlang cookie goes here
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_PID_FILE": str(self.workdir / "beam.pid"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }


if __name__ == "__main__":  # for set-up scripts: python -m neuavatar.stack.rabbit (apt only when missing)
    print(ensure_rabbitmq_installed(install=True))
