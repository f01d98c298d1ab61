"""The trainer's resumable checkpoint in the object store: uploaded as training goes, fetched on a retry.

``train_avatar(dataset, tracking, OUT, ...)`` trains in ``OUT/../.OUT.training/`` and replaces
``checkpoint.pt`` there (atomically: written beside, then renamed) every ``checkpoint_every`` steps
and at the end of each training stage. When it starts and finds that file, with the identity of the
same dataset, tracking and settings, it continues from it instead of starting over.

So the trainer service (1) downloads ``checkpoints/{job_id}/resume.pt`` to that place before
training, when the object exists (a redelivered or retried job), and (2) runs a
:class:`CheckpointUploader` thread that watches the file and uploads each new version, at most once
per interval. Each upload is of a hard link to the file's current inode, which the trainer never
writes again (it renames a new file over the name), so an upload never sees a half-written file.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from neuavatar.avatar.pipeline import RESUME_FILE
from neuavatar.services import metrics
from neuavatar.storage import IntegrityError, ObjectNotFound, ObjectStore

__all__ = ["CheckpointUploader", "training_dir", "fetch_resume_checkpoint"]

log = logging.getLogger("neuavatar.services")


def training_dir(out: Path) -> Path:
    """Where ``train_avatar(..., out)`` keeps its work and its resumable checkpoint."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.training"


def fetch_resume_checkpoint(store: ObjectStore, key: str, out: Path) -> bool:
    """Download the checkpoint ``key`` to where ``train_avatar(..., out)`` resumes from; whether there was one.

    A corrupt object is ignored (training starts over) rather than trusted.
    """
    target = training_dir(out) / RESUME_FILE
    try:
        store.get_file(key, target)
    except ObjectNotFound:
        return False
    except IntegrityError as e:
        log.warning("ignoring the resumable checkpoint %s: %s", key, e)
        return False
    return True


class CheckpointUploader:
    """Watches ``path`` in a thread and uploads each new version to ``key``, at most every
    ``interval_seconds`` (the first at once).

    Args:
        snapshots: a folder on the same file system as ``path`` for the hard links being uploaded.
        poll_seconds: how often the file is looked at.
    """

    def __init__(self, store: ObjectStore, key: str, path: Path, snapshots: Path, interval_seconds: float,
                 poll_seconds: float = 0.5) -> None:
        self.store, self.key, self.path, self.snapshots = store, key, Path(path), Path(snapshots)
        self.interval_seconds, self.poll_seconds = interval_seconds, poll_seconds
        self.uploads = 0
        self._uploaded: tuple[int, int, int] | None = None
        self._last = -float("inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CheckpointUploader:
        self.snapshots.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="neuavatar-checkpoint-upload", daemon=True)
        self._thread.start()
        return self

    def mark_uploaded(self) -> None:
        """Take the file there now as uploaded already (the checkpoint just downloaded to resume from)."""
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                return
            self._uploaded, self._last = (st.st_ino, st.st_mtime_ns, st.st_size), time.monotonic()

    def flush(self) -> bool:
        """Upload the current file now if it is not uploaded yet (e.g. before the service stops); whether it did."""
        return self._poll(force=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> CheckpointUploader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self._poll(force=False)
            except Exception as e:  # the store is away: training goes on, the next poll tries again
                log.warning("uploading the checkpoint %s failed: %s", self.key, e)

    def _poll(self, force: bool) -> bool:
        with self._lock:
            if not force and time.monotonic() - self._last < self.interval_seconds:
                return False
            try:
                st = self.path.stat()
            except FileNotFoundError:
                return False
            # Taken before the link: if the file is replaced in between, the newer one goes up now
            # and once more at the next poll, which is harmless.
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature == self._uploaded:
                return False
            snapshot = self.snapshots / f"resume-{self.uploads}.pt"
            snapshot.unlink(missing_ok=True)
            try:
                try:
                    os.link(self.path, snapshot)
                except FileNotFoundError:
                    return False
                except OSError:  # no hard links on this file system: a copy
                    shutil.copy2(self.path, snapshot)
                self.store.put_file(self.key, snapshot)
                self._uploaded, self._last = signature, time.monotonic()
                self.uploads += 1
                metrics.CHECKPOINT_UPLOADS.inc()
                log.info("uploaded the resumable checkpoint %s (%d bytes)", self.key, snapshot.stat().st_size)
                return True
            except FileNotFoundError:
                return False
            finally:
                snapshot.unlink(missing_ok=True)
