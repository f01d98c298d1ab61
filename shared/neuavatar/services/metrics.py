"""The services' Prometheus metrics, in one place, and the endpoint that exports them.

Names follow Prometheus' conventions (the ``neuavatar_`` prefix, base units, ``_total`` and
``_seconds`` suffixes); labels are low-cardinality (a stage, an outcome, an RPC), never a job or
avatar id. Every service process exports all of them; each fills the ones that concern it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "JOBS_RECEIVED", "JOBS_COMPLETED", "JOBS_SKIPPED", "JOBS_FAILED", "JOBS_CANCELLED", "JOBS_INTERRUPTED", "JOBS_CREATED", "STAGE_SECONDS",
    "QUEUE_LAG_SECONDS", "GPU_MEMORY_BYTES", "TRAIN_LOSS", "TRAIN_PSNR", "CHECKPOINT_UPLOADS", "FRAMES_RENDERED",
    "STREAM_LATENCY_SECONDS", "GPU_MEMORY_TOTAL_BYTES", "LIVE_SESSIONS", "start_metrics_server", "record_gpu_memory",
]

log = logging.getLogger("neuavatar.services")

_LONG = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))
_LATENCY = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, float("inf"))

JOBS_RECEIVED = Counter("neuavatar_jobs_received_total", "Job messages a stage worker started on", ["stage"])
JOBS_COMPLETED = Counter("neuavatar_jobs_completed_total", "Jobs a stage finished (its output stored, the next "
                         "stage queued)", ["stage"])
JOBS_SKIPPED = Counter("neuavatar_jobs_skipped_total", "Jobs whose stage output already existed (a redelivery): "
                       "forwarded without doing the work again", ["stage"])
JOBS_FAILED = Counter("neuavatar_jobs_failed_total", "Stage runs that failed; outcome: retry (tried again later) "
                      "or permanent (the job failed)", ["stage", "outcome"])
JOBS_CANCELLED = Counter("neuavatar_jobs_cancelled_total", "Stage runs stopped because their job was deleted",
                         ["stage"])
JOBS_INTERRUPTED = Counter("neuavatar_jobs_interrupted_total", "Stage runs stopped because their service was "
                           "stopping; the job went back to the queue", ["stage"])
JOBS_CREATED = Counter("neuavatar_jobs_created_total", "Jobs created through the Avatars API", ["source"])
STAGE_SECONDS = Histogram("neuavatar_stage_duration_seconds", "Wall time of a stage's run on one job, from "
                          "message to output stored", ["stage"], buckets=_LONG)
QUEUE_LAG_SECONDS = Histogram("neuavatar_queue_lag_seconds", "Time from a job's message being published to a "
                              "stage starting on it", ["stage"], buckets=_LONG)
GPU_MEMORY_BYTES = Gauge("neuavatar_gpu_memory_max_allocated_bytes", "Peak GPU memory torch allocated during the "
                         "last job of a stage (torch.cuda.max_memory_allocated)", ["stage"])
TRAIN_LOSS = Gauge("neuavatar_train_loss", "The training loss last reported by the trainer")
TRAIN_PSNR = Gauge("neuavatar_train_psnr_db", "The training PSNR last reported by the trainer, in dB")
CHECKPOINT_UPLOADS = Counter("neuavatar_checkpoint_uploads_total", "Resumable training checkpoints uploaded")
FRAMES_RENDERED = Counter("neuavatar_frames_rendered_total", "Frames the renderer sent", ["rpc"])
STREAM_LATENCY_SECONDS = Histogram("neuavatar_stream_latency_seconds", "Live session: from a request's arrival to "
                                   "its frame being ready", buckets=_LATENCY)
# For deployment: the GPU memory alert divides the peak by this, and the renderer scales on live sessions.
GPU_MEMORY_TOTAL_BYTES = Gauge("neuavatar_gpu_memory_total_bytes", "Memory of the GPU this process computes on "
                               "(torch.cuda.get_device_properties; set after each job, beside the peak)")
LIVE_SESSIONS = Gauge("neuavatar_live_sessions", "Live sessions (LiveReenact streams) open on this renderer now")


def start_metrics_server(port: int, host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
    """Serve ``/metrics`` on ``host:port`` (0: a free port) in a background thread; (the port, a stop function).

    Raises:
        OSError: the port cannot be bound.
    """
    server, thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return bound, stop


def record_gpu_memory(stage: str) -> None:
    """Set the GPU memory gauge from torch's peak for the job just done, and reset the peak
    (nothing without CUDA, or when torch is not loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    GPU_MEMORY_BYTES.labels(stage).set(torch.cuda.max_memory_allocated())
    GPU_MEMORY_TOTAL_BYTES.set(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    torch.cuda.reset_peak_memory_stats()
