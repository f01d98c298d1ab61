"""Child processes that outlive the command that started them, found again by their pid file.

Every part of the local stack (RabbitMQ, SeaweedFS, Prometheus, a service) is a :class:`Managed`
process: started in its own session (so that stopping it stops its children too), its output
appended to a log file, its pid written beside it, and "ready" meaning that its port answers.
The pid file also holds the process's start time (``/proc/PID/stat``), so that a pid that the
system has since given to another program is recognised as stale and never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Managed", "free_port", "port_open", "wait_for_port", "log_tail"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 60.0, process: subprocess.Popen | None = None,
                  name: str = "process", log: Path | None = None) -> None:
    """Wait until ``host:port`` accepts connections.

    Raises:
        RuntimeError: ``process`` exited first, or ``timeout`` seconds passed; the message ends
            with the last lines of ``log``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before listening on "
                               f"{host}:{port}{log_tail(log)}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {host}:{port} within {timeout:.0f} s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 15) -> str:
    """``"; the end of LOG:\n"`` and its last ``lines`` lines, for error messages; "" when there is no log."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; the end of {log}:\n" + "\n".join(text)


@dataclass
class Managed:
    """A detached child process with a pid file and a log file in ``workdir``.

    Args:
        name: what the messages call it; also names the files (``NAME.pid``, ``NAME.log``).
        workdir: where its pid and log files live.
    """

    name: str
    workdir: Path

    @property
    def pid_file(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
              port: int | None = None, timeout: float = 60.0) -> int:
        """Start ``argv`` (unless it already runs) and wait for ``port`` to answer; its pid.

        Raises:
            RuntimeError: it exited or did not listen in time (with its log's last lines).
        """
        running = self.pid()
        if running is not None:
            return running
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
        started = _start_time(process.pid)
        self.pid_file.write_text(f"{process.pid} {started}\n" if started is not None else f"{process.pid}\n")
        if port is not None:
            try:
                wait_for_port(port, timeout=timeout, process=process, name=self.name, log=self.log_file)
            except RuntimeError:
                self.stop()
                raise
        return process.pid

    def pid(self) -> int | None:
        """The pid of the running process, or None (a stale pid file is removed)."""
        try:
            fields = self.pid_file.read_text().split()
            pid, started = int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if not _alive(pid) or (started is not None and _start_time(pid) not in (started, None)):
            self.pid_file.unlink(missing_ok=True)  # gone, or the pid now belongs to another process
            return None
        return pid

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the process and its children (SIGTERM, then SIGKILL after ``timeout`` s); whether one ran."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the process alone, as a crash would (tests of recovery); its pid file stays."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/PID/stat); None if unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that another process has not reaped yet is not running
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _reap(pid: int) -> None:
    """Collect the exit status of our own child ``pid`` if it has ended (no zombie left behind)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
