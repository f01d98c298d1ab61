"""A scratch folder of one's own under ``work_dir``, and the removal of those whose owner is gone.

Jobs work in temporary folders, which a process killed mid-job (SIGKILL, out of memory, a lost
node) leaves behind. So each stage worker and job API claims ``work_dir/scratch/{name}/``, holding
an exclusive lock on ``work_dir/scratch/{name}.lock`` for as long as it lives, makes its temporary
folders inside, and on claiming removes every other folder whose lock nobody holds.

The lock is ``flock``: the kernel releases it when its process dies, however it dies, and it is
held per open file, so two workers sharing a ``work_dir`` (processes, or threads of one process as
in the tests) each see the other's lock as held and leave its folder alone. Order makes the
protocol race-free: a claim creates and locks its lock file (under a temporary name, renamed into
place once locked) before it makes its folder, and a cleaner removes a folder before its lock
file, so a folder without a lock file is always stale.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

__all__ = ["WorkArea", "SCRATCH_DIR", "remove_stale"]

log = logging.getLogger("neuavatar.services")

SCRATCH_DIR = "scratch"
"""The folder under ``work_dir`` that holds the work areas."""
_LOCK = ".lock"
_CLAIMING = ".claiming-"  # a lock file being made (locked, not renamed into place yet)


class WorkArea:
    """A folder under ``work_dir/scratch`` that belongs to this object until :meth:`release`.

    Use :meth:`claim`; put temporary folders under :attr:`path`.
    """

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, work_dir: Path, label: str) -> WorkArea:
        """Claim a new area named after ``label`` (e.g. the stage) and this process, then remove
        the areas of workers that are gone.

        Raises:
            OSError: ``work_dir`` cannot be written.
        """
        scratch = Path(work_dir) / SCRATCH_DIR
        scratch.mkdir(parents=True, exist_ok=True)
        while True:
            fd, claiming = tempfile.mkstemp(prefix=_CLAIMING, dir=scratch)
            name = f"{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(claiming, scratch / f"{name}{_LOCK}")
                break
            except OSError:  # a cleaner took the half-made claim for a dead one: try again
                os.close(fd)
                Path(claiming).unlink(missing_ok=True)
        area = cls(scratch / name, fd)
        area.path.mkdir()
        remove_stale(Path(work_dir))
        return area

    def release(self) -> None:
        """Remove the folder and give up the claim (the folder first: see the module's docstring)."""
        if self._lock_fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.with_name(self.path.name + _LOCK).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def __repr__(self) -> str:
        return f"WorkArea({self.path})"


def remove_stale(work_dir: Path) -> list[Path]:
    """Remove the work areas under ``work_dir/scratch`` whose owner is gone; the folders removed."""
    scratch = Path(work_dir) / SCRATCH_DIR
    removed: list[Path] = []
    try:
        entries = sorted(scratch.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.endswith(_LOCK) or entry.name.startswith(_CLAIMING):
            folder = entry.with_name(entry.name.removesuffix(_LOCK)) if entry.name.endswith(_LOCK) else None
            if _take(entry, folder):
                removed += [folder] if folder is not None else []
        elif entry.is_dir() and not entry.with_name(entry.name + _LOCK).exists():
            shutil.rmtree(entry, ignore_errors=True)  # a cleaner died between the folder and its lock file
            removed.append(entry)
    for folder in removed:
        log.info("removed %s, the scratch folder of a worker that is gone", folder)
    return removed


def _take(lock_file: Path, folder: Path | None) -> bool:
    """Remove ``folder`` and ``lock_file`` if nobody holds the lock; whether it did."""
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:  # another cleaner was quicker
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: its worker is alive
            return False
        try:
            if os.fstat(fd).st_ino != os.stat(lock_file).st_ino:
                return False  # removed and made again meanwhile: not the one we locked
        except FileNotFoundError:
            return False
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        lock_file.unlink(missing_ok=True)
        return folder is not None
    finally:
        os.close(fd)
