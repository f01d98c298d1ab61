"""The stage workers: a job message in, the library stage run on it, its output stored, the next job out.

For each message (docs/services.md), :meth:`StageWorker.handle`:

1. drops it if the job was deleted; resolves the run configuration it carries (a bad one fails
   the job); marks the record running and measures the queue lag;
2. skips the work when the stage's output already exists in S3 with a valid checksum (a
   redelivery after a crash, or the same message twice), else fetches the inputs into a temporary
   folder in the worker's scratch area under ``work_dir`` (:mod:`~neuavatar.services.workdir`, which
   also removes the areas of workers that died), runs the library call with a progress callback that publishes
   throttled events and record updates, and stores the output (``put_dir``);
3. updates the record, publishes the next stage's job (confirmed) and a ``done`` event; the worker
   acks only after the handler returned.

Failures: a :class:`~neuavatar.errors.NeuAvatarError` that is the input's fault (a corrupt video,
a missing input object, a bad configuration) fails the job at once (record ``failed`` with the
message, a ``failed`` event) and is raised as :class:`~neuavatar.messaging.BadMessage`, which the
worker dead-letters without retrying. Anything else (the store or broker away, a bug, a GPU fault)
is raised as is: the worker retries it up to ``max_attempts``, and on the last attempt the job fails.

Stopping (:meth:`StageWorker.request_stop`, on SIGTERM): the library call ends at its next progress
report with :class:`~neuavatar.messaging.JobInterrupted`; nothing is stored (the output goes up in
one put, after the call), its temporary folder is removed, the record goes back to ``queued``, the
trainer uploads its latest checkpoint, and the worker hands the message back to the broker unacked.

The avatar's id is the job's id: a redelivered train job finds the avatar it made, never a second one.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from neuavatar.config import from_dict, merge, to_dict
from neuavatar.errors import CheckpointError, ConfigError, DatasetError, InputError, NeuAvatarError
from neuavatar.messaging import (
    BadMessage,
    Event,
    EventKind,
    EventOutbox,
    JobInterrupted,
    JobMessage,
    Publisher,
    Stage,
    Worker,
)
from neuavatar.presets import PRESETS, RunConfig
from neuavatar.services import metrics
from neuavatar.services.checkpoints import CheckpointUploader, fetch_resume_checkpoint, training_dir
from neuavatar.services.jobs import JobCancelled, JobStore, now_iso, overall_percent
from neuavatar.services.listing import put_avatar_meta
from neuavatar.services.logs import job_context
from neuavatar.services.reporting import JobReporter, StepPlan, preprocess_plan, track_plan, train_plan
from neuavatar.services.settings import ServiceSettings
from neuavatar.services.workdir import WorkArea
from neuavatar.storage import (
    IntegrityError,
    InvalidKeyError,
    ObjectNotFound,
    ObjectStore,
    UnsafeArchiveError,
    avatar_key,
    avatar_meta_key,
    dataset_key,
    resume_key,
    tracking_key,
    validate_key,
)

__all__ = ["StageWorker", "SERVICE_STAGES", "NEXT_STAGE", "output_key", "is_permanent", "SERVICE_CONFIG_FILE"]

log = logging.getLogger("neuavatar.services")

SERVICE_STAGES: dict[str, Stage] = {"preprocess": "preprocess", "tracker": "track", "trainer": "train"}
"""Service name -> the stage whose queue it consumes."""
NEXT_STAGE: dict[str, Stage | None] = {"preprocess": "track", "track": "train", "train": None}
SERVICE_CONFIG_FILE = "service_config.json"
"""Written into the avatar directory: the job's run configuration and the services' settings."""
_RESUMED = re.compile(r"stage (\d+), step (\d+)")
_PERMANENT = (InputError, ConfigError, DatasetError, CheckpointError, ObjectNotFound, IntegrityError, InvalidKeyError,
              UnsafeArchiveError, BadMessage)


def output_key(stage: str, job_id: str) -> str:
    """The object a stage's run on ``job_id`` produces (for train: the avatar archive)."""
    return {"preprocess": dataset_key, "track": tracking_key, "train": avatar_key}[stage](job_id)


def is_permanent(error: BaseException) -> bool:
    """Whether ``error`` is the job's own fault, so that retrying cannot help: an unusable input
    (corrupt video, bad dataset, missing or corrupt input object, unsafe archive), a bad
    configuration or a malformed message. The store or broker being away, refused credentials,
    a dead worker process or a bug are not: those are retried."""
    return isinstance(error, _PERMANENT)


@dataclass
class _Outcome:
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


class StageWorker:
    """Runs one stage's jobs; :meth:`handle` is a :class:`~neuavatar.messaging.Worker`'s handler.

    Args:
        stage: ``preprocess``, ``track`` or ``train``.
        settings: the service's settings.
        store, publisher: shared ones (default: made from ``settings``).

    Use :meth:`worker` for the consume loop, :meth:`request_stop` when the service is told to stop
    and :meth:`close` at the end.
    """

    def __init__(self, stage: Stage, settings: ServiceSettings, *, store: ObjectStore | None = None,
                 publisher: Publisher | None = None) -> None:
        if stage not in NEXT_STAGE:
            raise ValueError(f"stage must be one of {', '.join(NEXT_STAGE)}, got {stage!r}")
        self.stage: Stage = stage
        self.settings = settings
        self.store = store or ObjectStore(settings.storage)
        self.jobs = JobStore(self.store)
        self._own_publisher = publisher is None
        self.publisher = publisher or Publisher(settings.broker)
        self.outbox = EventOutbox(settings.broker)
        """Publishes the jobs' events in the background: a broker outage never slows a job down."""
        self.work_dir = Path(settings.work_dir)
        self.scratch = WorkArea.claim(self.work_dir, stage)
        """This worker's own folder for its jobs' temporary folders (released by :meth:`close`)."""
        self._run_lock = threading.Lock()
        self._stopping = threading.Event()
        self._preprocessor: Any = None
        self._preprocessor_config: Any = None
        self._uploader: CheckpointUploader | None = None
        self.last_resumed: dict[str, int] | None = None
        """Where the last training resumed from (``{"stage", "step"}``), or None if it started afresh."""

    def worker(self) -> Worker:
        """The consume loop of this stage's queue, calling :meth:`handle`."""
        return Worker(self.settings.broker, self.stage, self.handle)

    def request_stop(self) -> None:
        """The service is stopping: the job in hand stops at its next progress report and goes back
        to the broker (see the module's docstring); so does any job that arrives after this."""
        self._stopping.set()

    def flush_checkpoint(self) -> None:
        """Upload the trainer's latest checkpoint now (if it is training), so that whoever gets the
        job next resumes from it: for a stop that cannot wait for the next progress report."""
        uploader = self._uploader
        if uploader is not None:
            try:
                uploader.flush()
            except Exception as e:  # stopping anyway
                log.warning("could not upload the last checkpoint before stopping: %s", e)

    def close(self) -> None:
        self.close_preprocessor()
        self.scratch.release()
        self.outbox.close()
        if self._own_publisher:
            self.publisher.close()

    # -- the handler ---------------------------------------------------------------------------

    def handle(self, job: JobMessage) -> None:
        """Do (or skip) this stage of ``job``; returns when its output is stored and the next job queued.

        Raises:
            BadMessage: the job failed for good (dead-letter it, do not retry).
            Exception: anything else; the worker retries it.
        """
        stage, job_id = self.stage, job.job_id
        metrics.JOBS_RECEIVED.labels(stage).inc()
        started = time.monotonic()
        with self._run_lock, job_context(job_id, stage):
            if self._stopping.is_set():  # came in as the service stops: leave it to the next worker
                raise JobInterrupted(f"the {stage} service is stopping")
            try:
                if self.jobs.deleted(job_id):
                    log.info("%s: job %s was deleted; dropping its message", stage, job_id)
                    metrics.JOBS_CANCELLED.labels(stage).inc()
                    return
                config = self._config(job)
                self._start(job)
                key = output_key(stage, job_id)
                if self._stored(key):
                    outcome = self._skipped(job)
                    metrics.JOBS_SKIPPED.labels(stage).inc()
                else:
                    outcome = self._run(job, config)
                self._finish(job, outcome)
            except JobCancelled:
                log.info("%s: job %s was deleted while it ran; stopped, its output discarded", stage, job_id)
                metrics.JOBS_CANCELLED.labels(stage).inc()
                self._discard(job_id)
                return
            except JobInterrupted as e:
                log.info("%s: job %s interrupted after %.1f s: %s; it goes back to the queue", stage, job_id,
                         time.monotonic() - started, e)
                metrics.JOBS_INTERRUPTED.labels(stage).inc()
                self._record_quietly(job_id, state="queued", stage=stage, queued_at=now_iso(),
                                     message=f"{stage}: interrupted (the service stopped); queued again")
                raise
            except Exception as error:
                self._failed(job, error)
                raise
            finally:
                metrics.record_gpu_memory(stage)
        metrics.JOBS_COMPLETED.labels(stage).inc()
        metrics.STAGE_SECONDS.labels(stage).observe(time.monotonic() - started)
        log.info("%s: job %s done in %.1f s: %s", stage, job_id, time.monotonic() - started, outcome.message)

    def _discard(self, job_id: str) -> None:
        """Remove what this stage stored for a job that was deleted meanwhile."""
        try:
            self.store.delete(output_key(self.stage, job_id))
            if self.stage == "train":
                self.store.delete(avatar_meta_key(job_id))
                self.store.delete(resume_key(job_id))
        except Exception as e:  # the store is away: DeleteJob's tombstone still keeps the job dead
            log.warning("could not discard the output of deleted job %s: %s", job_id, e)

    def _config(self, job: JobMessage) -> RunConfig:
        """The run configuration the message carries, over the service's preset (a partial one is fine).

        Raises:
            ConfigError: an unknown setting or a bad value.
        """
        base = to_dict(PRESETS[self.settings.preset])
        return from_dict(RunConfig, merge(base, job.config), where=f"the {job.stage} job's config")

    def _start(self, job: JobMessage) -> None:
        record = self.jobs.find(job.job_id)
        if record is not None and record.get("state") == "queued" and record.get("queued_at"):
            try:
                queued = datetime.fromisoformat(record["queued_at"].replace("Z", "+00:00")).timestamp()
                metrics.QUEUE_LAG_SECONDS.labels(self.stage).observe(max(0.0, time.time() - queued))
            except ValueError:
                pass
        self.jobs.update(job.job_id, create=True, state="running", stage=self.stage, stage_percent=0.0,
                         percent=overall_percent(self.stage, 0.0), error=None,
                         message=f"{self.stage}: started (attempt {job.attempt})",
                         settings={self.stage: self.settings.public_dict()},
                         **({} if record is not None and record.get("config") else {"config": job.config}))

    def _stored(self, key: str) -> bool:
        """Whether ``key`` exists with content matching its checksum (downloaded to check it)."""
        if not self.store.exists(key):
            return False
        with tempfile.TemporaryDirectory(prefix="check-", dir=self.scratch.path) as tmp:
            try:
                self.store.get_file(key, Path(tmp) / "object")
            except (ObjectNotFound, IntegrityError) as e:
                log.warning("%s: the stored output %s is unusable (%s); doing the work again", self.stage, key, e)
                return False
        return True

    def _skipped(self, job: JobMessage) -> _Outcome:
        message = f"{self.stage}: its output is stored already; skipped"
        if self.stage != "train":
            return _Outcome(message)
        try:
            meta = self.store.get_json(avatar_meta_key(job.job_id))
        except ObjectNotFound:
            meta = self._avatar_meta_from_archive(job)
        return _Outcome(message, metrics=dict(meta.get("metrics", {})), record={"avatar_id": job.job_id})

    def _run(self, job: JobMessage, config: RunConfig) -> _Outcome:
        runner = {"preprocess": self._preprocess, "track": self._track, "train": self._train}[self.stage]
        self._emit(job.job_id, "started", percent=0.0, message=f"{self.stage} started (attempt {job.attempt})")
        with tempfile.TemporaryDirectory(prefix=f"{self.stage}-{job.job_id}-", dir=self.scratch.path) as tmp:
            return runner(job, config, Path(tmp))

    def _finish(self, job: JobMessage, outcome: _Outcome) -> None:
        stage, job_id = self.stage, job.job_id
        following = NEXT_STAGE[stage]
        if following is None:
            self.jobs.update(job_id, state="done", stage=stage, stage_percent=100.0, percent=100.0, error=None,
                             message=outcome.message, metrics=outcome.metrics, **outcome.record)
            self.store.delete(resume_key(job_id))
        else:
            self.jobs.update(job_id, state="queued", stage=following, stage_percent=0.0,
                             percent=overall_percent(stage, 100.0), message=f"{outcome.message}; queued for {following}",
                             queued_at=now_iso(), metrics=outcome.metrics, **outcome.record)
            inputs = dict(job.inputs)
            inputs.pop("video", None)
            inputs[{"preprocess": "dataset", "track": "tracking"}[stage]] = output_key(stage, job_id)
            next_job = JobMessage(job_id, following, inputs, job.config)
            self.publisher.publish_job(next_job, message_id=f"{job_id}-{following}")
        self._emit(job_id, "done", percent=100.0, message=outcome.message, metrics=outcome.metrics)

    def _failed(self, job: JobMessage, error: BaseException) -> None:
        """Record and announce a failure; raise BadMessage for one that must not be retried."""
        stage, job_id = self.stage, job.job_id
        permanent = is_permanent(error)
        text = str(error) if isinstance(error, NeuAvatarError) else f"{type(error).__name__}: {error}"
        if permanent or job.attempt >= self.settings.broker.max_attempts:
            metrics.JOBS_FAILED.labels(stage, "permanent").inc()
            log.error("%s: job %s failed%s: %s", stage, job_id, "" if permanent else
                      f" on its last attempt ({job.attempt})", text)
            self._record_quietly(job_id, state="failed", stage=stage, error=text, message=f"{stage} failed: {text}")
            self._emit(job_id, "failed", message=text)
            if permanent:
                raise BadMessage(f"{stage} failed for good: {text}") from error
            return
        metrics.JOBS_FAILED.labels(stage, "retry").inc()
        log.warning("%s: job %s failed on attempt %d of %d; it will be retried: %s", stage, job_id, job.attempt,
                    self.settings.broker.max_attempts, text)
        self._record_quietly(job_id, state="queued", stage=stage, queued_at=now_iso(),
                             message=f"{stage}: attempt {job.attempt} of {self.settings.broker.max_attempts} "
                                     f"failed ({text}); retrying")

    def _record_quietly(self, job_id: str, **changes: Any) -> None:
        try:
            self.jobs.update(job_id, create=True, **changes)
        except JobCancelled:
            pass
        except Exception as e:  # the store is away too: the event and the dead letter still tell
            log.warning("could not update the record of job %s: %s", job_id, e)

    def _emit(self, job_id: str, kind: EventKind, *, percent: float | None = None, message: str = "",
              metrics: dict[str, float] | None = None) -> None:
        """Queue an event of the job; it never blocks (:class:`~neuavatar.messaging.EventOutbox`: progress
        is best effort, ``done`` and ``failed`` wait for the broker; the record is the source of truth)."""
        try:
            event = Event(job_id, self.stage, kind, percent=percent, message=message[:2000], metrics=dict(metrics or {}))
        except Exception as e:  # a figure the event refuses: not worth failing the job for
            log.warning("could not make the %s event of job %s: %s", kind, job_id, e)
            return
        self.outbox.put(event)

    def _reporter(self, job: JobMessage, plan: StepPlan) -> JobReporter:
        def emit(kind: EventKind, **kwargs: Any) -> None:
            self._emit(job.job_id, kind, **kwargs)

        def update(**changes: Any) -> None:
            try:
                self.jobs.update(job.job_id, **changes)
            except JobCancelled:
                raise
            except Exception as e:  # a progress line is not worth failing the job for
                log.warning("could not update the record of job %s: %s", job.job_id, e)

        return JobReporter(self.stage, plan, emit, update, self.settings.progress_interval_seconds, self._stopping)

    def _fetch(self, job: JobMessage, name: str, into: Path, *, directory: bool) -> Path:
        """Download the input ``name`` of ``job`` to ``into`` (a tar object unpacked as a directory).

        Raises:
            InputError: the message names no such input.
            ObjectNotFound, IntegrityError: it is not in the store, or corrupt.
        """
        key = job.inputs.get(name)
        if not key:
            raise InputError(f"the {job.stage} job {job.job_id} names no {name!r} input (inputs: {sorted(job.inputs)})")
        validate_key(key)
        return self.store.get_dir(key, into) if directory else self.store.get_file(key, into)

    # -- the stages ----------------------------------------------------------------------------

    def _preprocess(self, job: JobMessage, config: RunConfig, tmp: Path) -> _Outcome:
        from neuavatar.preprocess import Preprocessor

        key = job.inputs.get("video", "")
        suffix = Path(key).suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", Path(key).suffix) else ".mp4"
        video = self._fetch(job, "video", tmp / f"video{suffix}", directory=False)
        if self._preprocessor_config != config.preprocess:
            self.close_preprocessor()
            self._preprocessor = Preprocessor(config.preprocess)
            self._preprocessor_config = config.preprocess
        try:
            result = self._preprocessor.process(video, tmp / "dataset", progress=self._reporter(job, preprocess_plan()))
        except InputError as e:  # name the upload, not the temporary copy
            raise InputError(str(e).replace(str(video), f"the video {key}")) from e
        self.store.put_dir(output_key("preprocess", job.job_id), result.dataset_dir, scratch=tmp)
        s = result.summary
        figures = {"frames": s.get("num_frames"), "valid_frames": s.get("num_valid"), "seconds": s.get("seconds")}
        return _Outcome(f"preprocess: {s.get('num_frames', '?')} frames", _numbers(figures))

    def close_preprocessor(self) -> None:
        """Stop the preprocess worker processes (they start again with the next job)."""
        if self._preprocessor is not None:
            self._preprocessor.close()
            self._preprocessor = self._preprocessor_config = None

    def _track(self, job: JobMessage, config: RunConfig, tmp: Path) -> _Outcome:
        from neuavatar.track import track_dataset

        dataset = self._fetch(job, "dataset", tmp / "dataset", directory=True)
        options = replace(config.track, device=self.settings.device)
        result = track_dataset(dataset, tmp / "tracking", options, overlay=False,
                               progress=self._reporter(job, track_plan()))
        self.store.put_dir(output_key("track", job.job_id), result.tracking_dir, scratch=tmp)
        m = result.metrics
        figures = {k: m.get(k) for k in ("landmark_error_px", "silhouette_iou", "track_seconds")}
        return _Outcome(f"track: landmark error {m.get('landmark_error_px', float('nan')):.2f} px", _numbers(figures))

    def _train(self, job: JobMessage, config: RunConfig, tmp: Path) -> _Outcome:
        from neuavatar.avatar import STAGES, train_avatar

        job_id = job.job_id
        dataset = self._fetch(job, "dataset", tmp / "dataset", directory=True)
        tracking = self._fetch(job, "tracking", tmp / "tracking", directory=True)
        out = tmp / "avatar"
        train_config = replace(config.train, device=self.settings.device)
        resumed = fetch_resume_checkpoint(self.store, resume_key(job_id), out)
        if resumed:
            log.info("train: job %s resumes from its uploaded checkpoint", job_id)
            self._emit(job_id, "progress", percent=0.0, message="resuming from the last uploaded checkpoint")
        from neuavatar.avatar.pipeline import RESUME_FILE

        uploader = CheckpointUploader(self.store, resume_key(job_id), training_dir(out) / RESUME_FILE,
                                      tmp / ".snapshots", self.settings.checkpoint_upload_seconds)
        if resumed:
            uploader.mark_uploaded()
        self._uploader = uploader
        try:
            with uploader:
                result = train_avatar(dataset, tracking, out, train_config,
                                      progress=self._reporter(job, train_plan(train_config.steps, STAGES)))
        except JobInterrupted:
            self.flush_checkpoint()  # the next trainer resumes from the latest checkpoint
            raise
        finally:
            self._uploader = None
        found = _RESUMED.search(result.resumed_from or "")
        self.last_resumed = {"stage": int(found[1]), "step": int(found[2])} if found else None
        record = self.jobs.find(job_id) or {}
        (out / SERVICE_CONFIG_FILE).write_text(json.dumps(
            {"job_id": job_id, "config": to_dict(config), "settings": record.get("settings", {}),
             "options": record.get("options", {})}, indent=2) + "\n")
        info = self.store.put_dir(avatar_key(job_id), out, scratch=tmp)
        library_meta = json.loads((out / "avatar.json").read_text())
        meta = _avatar_meta(job_id, record, library_meta, info.size_bytes, info.sha256, self.last_resumed)
        put_avatar_meta(self.store, meta)
        m = meta["metrics"]
        text = f"avatar {job_id} ready" + (f": PSNR {m['psnr']:.2f} dB" if "psnr" in m else "")
        changes: dict[str, Any] = {"avatar_id": job_id}
        if self.last_resumed is not None:
            changes["resumed_from"] = self.last_resumed
        return _Outcome(text, metrics=m, record=changes)

    def _avatar_meta_from_archive(self, job: JobMessage) -> dict[str, Any]:
        """Rebuild a missing ``avatar.json`` from the stored archive (a crash between the two puts)."""
        with tempfile.TemporaryDirectory(prefix="meta-", dir=self.scratch.path) as tmp:
            out = self.store.get_dir(avatar_key(job.job_id), Path(tmp) / "avatar")
            info = self.store.stat(avatar_key(job.job_id))
            library_meta = json.loads((out / "avatar.json").read_text())
        meta = _avatar_meta(job.job_id, self.jobs.find(job.job_id) or {}, library_meta, info.size_bytes,
                            info.sha256, None)
        put_avatar_meta(self.store, meta)
        return meta


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v == v and abs(v) != float("inf")}


def _avatar_meta(avatar_id: str, record: dict[str, Any], library_meta: dict[str, Any], size_bytes: int,
                 sha256: str | None, resumed: dict[str, int] | None) -> dict[str, Any]:
    """``avatars/{id}/avatar.json``: what GetAvatar and ListAvatars answer."""
    head = library_meta.get("head_model", {})
    config = library_meta.get("config", {})
    return {"avatar_id": avatar_id, "job_id": record.get("job_id", avatar_id),
            "name": (record.get("options") or {}).get("name", ""), "size": int(config.get("size", 0)),
            "num_expression": int(head.get("num_expression", 0)), "metrics": _numbers(library_meta.get("metrics", {})),
            "size_bytes": size_bytes, "sha256": sha256, "created": now_iso(), "resumed_from": resumed}

