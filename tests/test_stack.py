"""The local stack (``neuavatar stack up|status|down``) with real RabbitMQ, SeaweedFS and Prometheus,
and the ``neuavatar client`` commands against real gRPC servers on loopback.

One stack of infrastructure (``--no-services``) runs for the module; its last tests stop and restart
it. Stacks that must fail, and those with services (a stand-in for ``neuavatar serve`` that checks
its environment, and the real services when this installation has them), get directories of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import stat
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pika
import pytest
from google.protobuf import empty_pb2

from neuavatar import cli
from neuavatar.api import ApiSettings, NotFoundError, ServerThread, pb, pb_grpc
from neuavatar.errors import ConfigError
from neuavatar.stack import rabbit
from neuavatar.stack.local import (
    SERVICES,
    StackError,
    StackOptions,
    load_state,
    parse_ports,
    stack_up,
)
from neuavatar.stack.process import free_port, port_open
from neuavatar.stack.prometheus import PrometheusNotInstalled, check_config, prometheus_config, promtool_binary
from neuavatar.stack.seaweed import weed_binary
from neuavatar.storage import ObjectStore, StorageAccessDenied

TOKEN = "client-test-token-5d1e"


def _require_infrastructure() -> None:
    try:
        rabbit.ensure_rabbitmq_installed()
        weed_binary()
        promtool_binary()
    except (rabbit.RabbitMQNotInstalled, ConfigError) as e:
        pytest.skip(str(e))


def _run(*argv: str) -> tuple[int, str, str]:
    """``neuavatar ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _pid_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.pid"))


def _pids(directory: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in _pid_files(directory)]


def _pids_of(directory: Path, part: str) -> dict[str, int]:
    return {p.stem: int(p.read_text().split()[0]) for p in (directory / part).glob("*.pid")}


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _processes_mentioning(directory: Path) -> list[str]:
    """Command lines of live processes that name ``directory`` (what a leaked part would show)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name == str(os.getpid()):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline and not _gone(int(proc.name)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _stack_ports(directory: Path) -> list[int]:
    state = load_state(directory)
    return [state.amqp_port, state.epmd_port, state.s3_port, state.prometheus_port,
            *state.seaweed_ports.values(), *(p for s in state.services.values() for p in (s.api, s.metrics))]


# -- Prometheus's config (no server) ---------------------------------------------------------------

def test_the_generated_prometheus_config_passes_promtool(tmp_path):
    try:
        promtool_binary()
    except PrometheusNotInstalled as e:
        pytest.skip(str(e))
    targets = {name: f"127.0.0.1:{9100 + i}" for i, name in enumerate(SERVICES)}
    for name, kwargs in (("full", dict(targets=targets, self_address="127.0.0.1:9090")),
                         ("self-only", dict(targets={}, self_address="127.0.0.1:9090")),
                         ("empty", dict(targets={}))):
        path = tmp_path / f"{name}.yml"
        path.write_text(prometheus_config(**kwargs))
        assert "SUCCESS" in check_config(path)
    text = (tmp_path / "full.yml").read_text()
    assert all(f'service: "{name}"' in text for name in SERVICES) and "127.0.0.1:9103" in text
    bad = tmp_path / "bad.yml"
    bad.write_text(prometheus_config(targets) + "  - job_name: neuavatar\n")  # a duplicate job
    with pytest.raises(ConfigError, match="promtool refused"):
        check_config(bad)
    with pytest.raises(ValueError, match="scrape_interval_seconds"):
        prometheus_config({}, scrape_interval_seconds=0)


def test_port_flags_are_checked():
    assert parse_ports(["amqp=5673", "renderer-metrics=9104"]) == {"amqp": 5673, "renderer-metrics": 9104}
    for pairs, match in ((["amqp"], "NAME=PORT"), (["mysql=3306"], "NAME one of"), (["s3=x"], "port number"),
                         (["s3=70000"], "not a TCP port"), (["s3=9000", "prometheus=9000"], "more than one")):
        with pytest.raises(StackError, match=match):
            parse_ports(pairs)
    code, _, err = _run("stack", "up", "--ports", "s3=0", "--dir", "/nonexistent/never-made")
    assert code == 2 and "not a TCP port" in err and "Traceback" not in err


# -- one stack of infrastructure for the module -----------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _require_infrastructure()
    directory = tmp_path_factory.mktemp("stack") / "made-by-up"
    started = time.monotonic()
    code, out, err = _run("stack", "up", "--dir", str(directory), "--no-services")
    print(f"stack up (no services): {time.monotonic() - started:.1f} s\n{err}{out}")
    try:
        assert code == 0, err
        yield directory, out + err
    finally:
        _run("stack", "down", "--dir", str(directory))


def test_up_prints_the_parts_and_keeps_the_keys_private(stack):
    directory, output = stack
    state = load_state(directory)
    assert state.state == "up" and state.services == {}
    for part in ("rabbitmq", "seaweedfs", "prometheus"):
        assert part in output
    assert f"amqp://127.0.0.1:{state.amqp_port}" in output and str(directory / "seaweedfs" / "seaweedfs.log") in output
    credentials = directory / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    secret = json.loads(credentials.read_text())["s3_secret_key"]
    assert secret not in output and secret not in (directory / "stack.json").read_text()
    ports = _stack_ports(directory)
    assert len(ports) == len(set(ports)), "every part has its own ports"


def test_status_reports_every_part_healthy(stack):
    directory, _ = stack
    code, out, _ = _run("stack", "status", "--dir", str(directory))
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"rabbitmq", "seaweedfs", "prometheus"}
    assert all(" ready " in row for row in rows.values())


def test_a_message_goes_round_trip_through_the_stacks_broker(stack):
    directory, _ = stack
    state = load_state(directory)
    body = uuid.uuid4().bytes
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(state.broker_url))) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
        method, _, received = channel.basic_get(queue, auto_ack=False)
        assert received == body
        channel.basic_ack(method.delivery_tag)


def test_an_object_goes_round_trip_through_the_stacks_s3(stack):
    directory, _ = stack
    state = load_state(directory)
    store = ObjectStore(state.storage_settings())
    data = os.urandom(100_000)
    store.put_bytes("tests/stack/round-trip.bin", data)
    assert store.get_bytes("tests/stack/round-trip.bin") == data
    assert hashlib.sha256(data).hexdigest() == store.stat("tests/stack/round-trip.bin").sha256
    wrong = replace(state.storage_settings(), secret_key="wrong-secret", retry_attempts=1)
    with pytest.raises(StorageAccessDenied):  # the generated keys are the only way in
        ObjectStore(wrong).get_bytes("tests/stack/round-trip.bin")


def test_prometheus_is_ready_with_a_config_promtool_accepts(stack):
    directory, _ = stack
    state = load_state(directory)
    conn = http.client.HTTPConnection("127.0.0.1", state.prometheus_port, timeout=5)
    conn.request("GET", "/-/ready")
    assert conn.getresponse().status == 200
    conn.close()
    assert "SUCCESS" in check_config(directory / "prometheus" / "prometheus.yml")
    assert (directory / "prometheus" / "data").is_dir()


def test_a_second_up_refuses_while_the_stack_runs(stack):
    directory, _ = stack
    code, _, err = _run("stack", "up", "--dir", str(directory), "--no-services")
    assert code == 2 and "already runs" in err and "stack down" in err


def test_down_stops_exactly_the_stack_and_a_second_down_is_harmless(stack):
    directory, _ = stack
    pids, ports = _pids(directory), _stack_ports(directory)
    assert {p.name for p in _pid_files(directory)} == {"rabbitmq-server.pid", "epmd.pid", "beam.pid",  # beam: rabbit's
                                                       "seaweedfs.pid", "prometheus.pid"}
    code, out, _ = _run("stack", "down", "--dir", str(directory))
    assert code == 0 and "stopped: prometheus, seaweedfs, rabbitmq" in out
    assert all(_gone(pid) for pid in pids)
    assert not any(port_open(port) for port in ports)
    assert _pid_files(directory) == [] and _processes_mentioning(directory) == []
    code, out, _ = _run("stack", "down", "--dir", str(directory))
    assert code == 0 and "nothing was running" in out
    code, out, err = _run("stack", "status", "--dir", str(directory))
    assert code == 1 and out.count(" down ") == 3 and "stopped" in err
    assert load_state(directory).state == "down"


def test_up_again_reuses_the_ports_and_keeps_the_data(stack):
    directory, _ = stack
    before = load_state(directory)
    code, _, err = _run("stack", "up", "--dir", str(directory), "--no-services")
    assert code == 0, err
    after = load_state(directory)
    assert (after.amqp_port, after.s3_port, after.prometheus_port, after.node_name) == \
        (before.amqp_port, before.s3_port, before.prometheus_port, before.node_name)
    assert len(ObjectStore(after.storage_settings()).get_bytes("tests/stack/round-trip.bin")) == 100_000
    code, out, _ = _run("stack", "down", "--dir", str(directory))
    assert code == 0 and "rabbitmq" in out and _pid_files(directory) == []


# -- failures ------------------------------------------------------------------------------------------

def test_a_part_that_cannot_start_fails_up_and_leaves_nothing_running(tmp_path):
    _require_infrastructure()
    with socket.socket() as squatter:  # another program on the port Prometheus is told to use
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        code, out, err = _run("stack", "up", "--dir", str(tmp_path), "--no-services", "--ports", f"prometheus={port}")
    assert code == 2, out + err
    assert f"cannot start prometheus: port {port} (prometheus)" in err and "already in use" in err
    assert "stopped again: seaweedfs, rabbitmq" in err and "Traceback" not in err
    state = load_state(tmp_path)
    assert state.state == "failed"
    assert not any(port_open(p) for p in _stack_ports(tmp_path) if p != port)
    assert _pid_files(tmp_path) == [] and _processes_mentioning(tmp_path) == []


# A stand-in for `neuavatar serve NAME`: health on the API port, /metrics on the metrics port, the
# environment of docs/services.md checked (it exits with code 3 when a variable is missing).
_FAKE_SERVE = """
import os, signal, sys, threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

fail, name = sys.argv[1], sys.argv[2]
needed = ["NEUAVATAR_BROKER_URL", "NEUAVATAR_S3_ENDPOINT", "NEUAVATAR_S3_ACCESS_KEY", "NEUAVATAR_S3_SECRET_KEY",
          "NEUAVATAR_S3_BUCKET", "NEUAVATAR_API_HOST", "NEUAVATAR_API_PORT", "NEUAVATAR_METRICS_PORT",
          "NEUAVATAR_WORK_DIR", "NEUAVATAR_DEVICE", "NEUAVATAR_PRESET"]
missing = [k for k in needed if not os.environ.get(k)]
if missing or name == fail:
    print(f"fake {name}: cannot start (missing: {missing})", flush=True)
    sys.exit(3)

class Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f'neuavatar_fake_up{{service="{name}"}} 1\\n'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

metrics = ThreadingHTTPServer(("127.0.0.1", int(os.environ["NEUAVATAR_METRICS_PORT"])), Metrics)
threading.Thread(target=metrics.serve_forever, daemon=True).start()
server = grpc.server(futures.ThreadPoolExecutor(2))
status = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(status, server)
server.add_insecure_port(f"127.0.0.1:{os.environ['NEUAVATAR_API_PORT']}")
server.start()
status.set("", health_pb2.HealthCheckResponse.SERVING)
print(f"fake {name}: serving", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
status.enter_graceful_shutdown()
server.stop(1).wait()
metrics.shutdown()
"""


def _fake_serve(tmp_path: Path, fail: str = "-") -> tuple[str, ...]:
    script = tmp_path / "fake_serve.py"
    script.write_text(_FAKE_SERVE)
    return (sys.executable, str(script), fail)


def test_up_starts_the_services_with_their_settings_and_prometheus_scrapes_them(tmp_path):
    _require_infrastructure()
    state = stack_up(StackOptions(dir=tmp_path, serve_command=_fake_serve(tmp_path), service_timeout_seconds=60))
    try:
        assert set(state.services) == set(SERVICES) and state.api_address and state.renderer_address
        code, out, _ = _run("stack", "status", "--dir", str(tmp_path))
        assert code == 0, out
        assert sum("SERVING, metrics up" in line for line in out.splitlines()) == len(SERVICES)
        secret = json.loads((tmp_path / "credentials.json").read_text())["s3_secret_key"]
        for name in SERVICES:
            log = (tmp_path / "services" / f"{name}.log").read_text()
            assert f"fake {name}: serving" in log and secret not in log
        deadline, up = time.monotonic() + 30, set()
        while time.monotonic() < deadline and up != set(SERVICES):  # the first scrape comes within 5 s
            conn = http.client.HTTPConnection("127.0.0.1", state.prometheus_port, timeout=5)
            conn.request("GET", "/api/v1/targets")
            targets = json.loads(conn.getresponse().read())["data"]["activeTargets"]
            conn.close()
            up = {t["labels"]["service"] for t in targets if t["labels"].get("service") and t["health"] == "up"}
            time.sleep(0.5)
        assert up == set(SERVICES)
        # One service dies: status says so and exits non-zero.
        os.kill(_pids_of(tmp_path, "services")["trainer"], signal.SIGKILL)
        code, out, _ = _run("stack", "status", "--dir", str(tmp_path))
        trainer = next(line for line in out.splitlines() if line.startswith("trainer"))
        assert code == 1 and "unreachable" in trainer
        pids, ports = _pids(tmp_path), _stack_ports(tmp_path)
    finally:
        code, out, _ = _run("stack", "down", "--dir", str(tmp_path))
    assert code == 0 and all(name in out for name in ("preprocess", "tracker", "renderer", "rabbitmq"))
    assert all(_gone(pid) for pid in pids) and not any(port_open(p) for p in ports)
    assert _processes_mentioning(tmp_path) == []


def test_a_service_that_fails_rolls_the_whole_stack_back(tmp_path):
    _require_infrastructure()
    with pytest.raises(StackError) as caught:
        stack_up(StackOptions(dir=tmp_path, serve_command=_fake_serve(tmp_path, fail="trainer"),
                              service_timeout_seconds=60))
    message = str(caught.value)
    assert "the trainer service exited during start-up" in message and "fake trainer: cannot start" in message
    assert "stopped again:" in message and "rabbitmq" in message
    assert load_state(tmp_path).state == "failed"
    assert not any(port_open(p) for p in _stack_ports(tmp_path))
    assert _pid_files(tmp_path) == [] and _processes_mentioning(tmp_path) == []


def test_up_with_services_reaches_serving_and_down_stops_them(tmp_path):
    _require_infrastructure()
    started = time.monotonic()
    code, out, err = _run("stack", "up", "--dir", str(tmp_path), "--timeout-seconds", "300")
    try:
        assert code == 0, err
        print(f"stack up with services: {time.monotonic() - started:.1f} s")
        state = load_state(tmp_path)
        assert set(state.services) == set(SERVICES)
        code, out, _ = _run("stack", "status", "--dir", str(tmp_path))
        assert code == 0, out
        assert sum("SERVING" in line for line in out.splitlines()) == len(SERVICES)
        code, out, err = _run("client", "avatars", "--dir", str(tmp_path))
        assert code == 0, err
        pids, ports = _pids(tmp_path), _stack_ports(tmp_path)
    finally:
        code, out, _ = _run("stack", "down", "--dir", str(tmp_path))
    assert code == 0 and all(name in out for name in SERVICES)
    assert all(_gone(pid) for pid in pids) and not any(port_open(p) for p in ports)
    assert _processes_mentioning(tmp_path) == []


# -- the client commands against real gRPC servers ------------------------------------------------------

class _Avatars(pb_grpc.AvatarsServicer):
    """A small, consistent Avatars service: job-1 succeeds (avatar anna-1), job-2 fails."""

    def __init__(self):
        self.uploads: list[tuple[pb.CreateAvatarHeader, bytes]] = []
        self.avatars = {"anna-1": pb.Avatar(avatar_id="anna-1", job_id="job-1", name="Anna", size=128,
                                            metrics={"psnr": 27.5, "ssim": 0.91})}
        self.jobs = {"job-1": pb.Job(job_id="job-1", state=pb.JOB_STATE_SUCCEEDED, stage=pb.STAGE_TRAIN, percent=100,
                                     avatar_id="anna-1"),
                     "job-2": pb.Job(job_id="job-2", state=pb.JOB_STATE_FAILED, stage=pb.STAGE_PREPROCESS,
                                     error="no face found in the video")}

    async def CreateAvatar(self, request_iterator, context):
        header, data = None, b""
        async for message in request_iterator:
            if message.WhichOneof("part") == "header":
                header = message.header
            else:
                data += message.chunk
        self.uploads.append((header, data))
        return pb.Job(job_id="job-1", state=pb.JOB_STATE_QUEUED, source=header.filename)

    async def WatchJob(self, request, context):
        job = await self.GetJob(request, context)
        stages = (pb.STAGE_PREPROCESS, pb.STAGE_TRACK, pb.STAGE_TRAIN) if job.state == pb.JOB_STATE_SUCCEEDED \
            else (pb.STAGE_PREPROCESS,)
        for stage in stages:
            yield pb.JobEvent(job_id=job.job_id, stage=stage, kind=pb.EVENT_KIND_STARTED)
            yield pb.JobEvent(job_id=job.job_id, stage=stage, kind=pb.EVENT_KIND_PROGRESS, percent=50,
                              message="half way", metrics={"psnr": 20.0})
        last = pb.EVENT_KIND_DONE if job.state == pb.JOB_STATE_SUCCEEDED else pb.EVENT_KIND_FAILED
        yield pb.JobEvent(job_id=job.job_id, stage=stages[-1], kind=last, percent=100)

    async def GetJob(self, request, context):
        if request.job_id not in self.jobs:
            raise NotFoundError(f"no job {request.job_id!r}")
        return self.jobs[request.job_id]

    async def ListJobs(self, request, context):
        return pb.ListJobsResponse(jobs=[j for j in self.jobs.values() if request.state in (0, j.state)])

    async def ListAvatars(self, request, context):
        return pb.ListAvatarsResponse(avatars=list(self.avatars.values()))

    async def DeleteAvatar(self, request, context):
        if self.avatars.pop(request.avatar_id, None) is None:
            raise NotFoundError(f"no avatar {request.avatar_id!r}")
        return empty_pb2.Empty()


class _Renderer(pb_grpc.RendererServicer):
    """Renders a flat image whose grey level is the jaw opening; reenacts by echoing the driver."""

    def __init__(self):
        self.requests: list[pb.RenderFrameRequest] = []

    async def RenderFrame(self, request, context):
        if request.avatar_id != "anna-1":
            raise NotFoundError(f"no avatar {request.avatar_id!r}")
        self.requests.append(request)
        image = np.full((24, 32, 3), int(request.controls.jaw_open), np.uint8)
        if request.encoding == pb.ENCODING_RGB:
            data = image.tobytes()
        else:
            data = cv2.imencode(".jpg", image)[1].tobytes()
        return pb.Frame(data=data, encoding=request.encoding, width=32, height=24, notes=["jaw_open clamped"])

    async def Reenact(self, request_iterator, context):
        header, data = None, b""
        async for message in request_iterator:
            if message.WhichOneof("part") == "header":
                header = message.header
            else:
                data += message.chunk
        if header.avatar_id != "anna-1":
            raise NotFoundError(f"no avatar {header.avatar_id!r}")
        yield pb.ReenactResponse(progress=pb.Progress(step="render", done=1, total=2))
        yield pb.ReenactResponse(progress=pb.Progress(step="render", done=2, total=2))
        yield pb.ReenactResponse(result=pb.ReenactResult(frames=2, size_bytes=len(data),
                                                         sha256=hashlib.sha256(data).hexdigest(),
                                                         seconds={"render": 0.5}))
        for i in range(0, len(data), 1 << 20):
            yield pb.ReenactResponse(chunk=data[i:i + (1 << 20)])


@pytest.fixture(scope="module")
def api():
    avatars, renderer = _Avatars(), _Renderer()
    with ServerThread([avatars, renderer], ApiSettings(port=0, token=TOKEN)) as server:
        yield f"127.0.0.1:{server.port}", avatars, renderer


def _client(api, *argv: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    address = api[0]
    flags = ["--api", address, "--renderer", address] + (["--token", token] if token else [])
    return _run("client", *argv, *flags)


def test_client_create_uploads_the_video_and_watch_follows_the_job(api, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(2_500_000))  # three chunks
    code, out, err = _client(api, "create", str(video), "--name", "Anna", "--preset", "cpu-smoke", "--watch")
    assert code == 0, err
    assert "job: job-1" in out and "avatar: anna-1" in out
    assert "upload" in err and "train" in err and "100%" in err
    header, data = api[1].uploads[-1]
    assert data == video.read_bytes() and header.options.name == "Anna" and header.options.preset == "cpu-smoke"
    code, out, err = _client(api, "watch", "job-2")
    assert code == 1 and "job job-2 failed: no face found in the video" in err


def test_client_lists_jobs_and_avatars_and_deletes(api):
    code, out, _ = _client(api, "jobs")
    assert code == 0 and "job-1" in out and "succeeded" in out and "anna-1" in out and "no face found" in out
    code, out, _ = _client(api, "jobs", "--state", "failed")
    assert code == 0 and "job-2" in out and "job-1" not in out
    code, out, _ = _client(api, "avatars")
    assert code == 0 and "anna-1" in out and "Anna" in out and "psnr 27.5" in out
    code, _, err = _client(api, "delete-avatar", "bob-9")
    assert code == 2 and "no avatar 'bob-9'" in err and "Traceback" not in err


def test_client_render_and_reenact_write_their_files(api, tmp_path):
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    code, out, err = _client(api, "render", "anna-1", "--out", str(png), "--jaw-open", "30", "--head-yaw", "10")
    assert code == 0, err
    assert "image:" in out and "warning: jaw_open clamped" in err
    request = api[2].requests[-1]
    assert request.controls.jaw_open == 30 and request.controls.head_yaw == 10
    assert not request.controls.HasField("zoom")  # only the values given travel
    image = cv2.imread(str(png))
    assert image.shape == (24, 32, 3) and int(image.mean()) == 30
    code, _, err = _client(api, "render", "anna-1", "--out", str(jpg), "--jaw-open", "12")
    assert code == 0 and cv2.imread(str(jpg)).shape == (24, 32, 3)
    driver, out_video = tmp_path / "driver.mp4", tmp_path / "out" / "reenact.mp4"
    driver.write_bytes(os.urandom(1_500_000))
    code, out, err = _client(api, "reenact", "anna-1", str(driver), "--out", str(out_video))
    assert code == 0, err
    assert out_video.read_bytes() == driver.read_bytes() and "2 frames" in out
    code, _, err = _client(api, "render", "nobody", "--out", str(png))
    assert code == 2 and "no avatar 'nobody'" in err


def test_client_errors_say_what_to_do(api, tmp_path):
    for token, expect in ((None, "needs a token"), ("wrong", "not valid")):
        code, _, err = _client(api, "avatars", token=token)
        assert code == 2 and "refused the call" in err and expect in err and "--token" in err
    dead = f"127.0.0.1:{free_port()}"
    code, _, err = _run("client", "jobs", "--api", dead)
    assert code == 2 and f"cannot reach the job API at {dead}" in err and "Traceback" not in err
    code, _, err = _run("client", "jobs", "--dir", str(tmp_path / "none"))
    assert code == 2 and "no local stack" in err and "stack up" in err
    code, _, err = _client(api, "create", str(tmp_path / "missing.mp4"))
    assert code == 2 and "does not exist" in err
    code, _, err = _client(api, "render", "anna-1", "--out", str(tmp_path / "x.gif"))
    assert code == 2 and ".png or .jpg" in err
    code, _, err = _run("client", "jobs", "--api", "no-port")
    assert code == 2 and "HOST:PORT" in err
