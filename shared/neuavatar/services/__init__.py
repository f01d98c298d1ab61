"""NeuAvatar's services (docs/services.md): the job API, the three stage workers and the renderer.

- :class:`ServiceSettings`, :func:`load_settings`: one typed settings object (file < env < flags).
- :class:`JobStore`: job records in S3 (``jobs/{id}/job.json``).
- :class:`StageWorker`: a stage's queue handler (fetch inputs, run the library, store, forward).
- :class:`AvatarsService`: ``neuavatar.v1.Avatars`` (CreateAvatar, WatchJob, jobs and avatars).
- :func:`s3_avatar_source`, :class:`MeteredRendererService`: the renderer over the object store.
- :class:`ServiceRuntime`, :func:`run_service`: one service (gRPC, metrics, worker) in a process;
  ``neuavatar serve NAME``.

Names load on first use.
"""

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ServiceSettings": "neuavatar.services.settings",
    "load_settings": "neuavatar.services.settings",
    "JobStore": "neuavatar.services.jobs",
    "JobCancelled": "neuavatar.services.jobs",
    "new_job_id": "neuavatar.services.jobs",
    "check_job_id": "neuavatar.services.jobs",
    "resolve_run_config": "neuavatar.services.jobs",
    "StageWorker": "neuavatar.services.stages",
    "AvatarsService": "neuavatar.services.avatars",
    "s3_avatar_source": "neuavatar.services.renderer",
    "MeteredRendererService": "neuavatar.services.renderer",
    "ServiceRuntime": "neuavatar.services.runtime",
    "run_service": "neuavatar.services.runtime",
    "SERVICE_NAMES": "neuavatar.services.runtime",
}
__all__ = [
    "ServiceSettings", "load_settings", "JobStore", "JobCancelled", "new_job_id", "check_job_id", "resolve_run_config",
    "StageWorker", "AvatarsService", "s3_avatar_source", "MeteredRendererService", "ServiceRuntime", "run_service",
    "SERVICE_NAMES",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'neuavatar.services' has no attribute {name!r}")


if TYPE_CHECKING:
    from neuavatar.services.avatars import AvatarsService
    from neuavatar.services.jobs import JobCancelled, JobStore, check_job_id, new_job_id, resolve_run_config
    from neuavatar.services.renderer import MeteredRendererService, s3_avatar_source
    from neuavatar.services.runtime import SERVICE_NAMES, ServiceRuntime, run_service
    from neuavatar.services.settings import ServiceSettings, load_settings
    from neuavatar.services.stages import StageWorker
