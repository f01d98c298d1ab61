"""The gRPC API over real loopback connections: the contract and its generated code, the server
helpers (health, reflection, token, TLS, error mapping) and the Renderer service (RenderFrame,
Reenact, LiveReenact) on the tiny avatar trained from a real clip."""

from __future__ import annotations

import importlib.util
import queue
import shutil
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from neuavatar.animate import PARAM_SIZES, Controls
from neuavatar.api import (
    ApiSettings,
    AvatarsClient,
    NotFoundError,
    RendererClient,
    RendererService,
    ServerThread,
    mapping_source,
    pb,
    pb_grpc,
)
from neuavatar.api.client import live_request
from neuavatar.errors import ConfigError
from neuavatar.video import probe_video, read_frames

from conftest import GLASSES, ROOT

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def service(tiny_avatar):
    return RendererService(mapping_source({"tiny": tiny_avatar[0].avatar_dir}), device="cpu")


@pytest.fixture(scope="module")
def server(service):
    with ServerThread([service], ApiSettings(port=0)) as running:  # port 0: a free one
        yield running


@pytest.fixture(scope="module")
def client(server):
    with RendererClient(f"127.0.0.1:{server.port}") as c:
        yield c


def _decode(frame: pb.Frame) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image[..., ::-1]


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def _health(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


# --- the contract --------------------------------------------------------------------------------

def test_generated_code_is_current_and_matches_the_library(tmp_path):
    spec = importlib.util.spec_from_file_location("neuavatar_setup", ROOT / "setup.py")
    setup_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_module)
    made = setup_module.generate_proto(out_dir=tmp_path)
    installed = Path(pb.__file__).parent
    assert {p.name for p in made} == {"neuavatar_pb2.py", "neuavatar_pb2.pyi", "neuavatar_pb2_grpc.py"}
    for path in made:  # proto/ changed without a reinstall: rerun `pip install -e .`
        assert path.read_text() == (installed / path.name).read_text(), f"{path.name} is stale"
    controls = {f.name for f in pb.Controls.DESCRIPTOR.fields}
    assert controls == {f.name for f in fields(Controls)}  # the wire's controls are the library's
    assert {f.name for f in pb.HeadParams.DESCRIPTOR.fields} == set(PARAM_SIZES)
    assert pb.DESCRIPTOR.package == "neuavatar.v1"


# --- server helpers -------------------------------------------------------------------------------

def test_health_reports_each_service_serving(server):
    assert _health(server.port) == health_pb2.HealthCheckResponse.SERVING
    assert _health(server.port, "neuavatar.v1.Renderer") == health_pb2.HealthCheckResponse.SERVING
    code, _ = _status(lambda: _health(server.port, "neuavatar.v1.Nothing"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {"neuavatar.v1.Renderer", "grpc.health.v1.Health"} <= set(database.get_services())
        proto = database.FindFileContainingSymbol("neuavatar.v1.Renderer")
        methods = {m.name for s in proto.service for m in s.method}
        assert {"RenderFrame", "Reenact", "LiveReenact"} <= methods


def test_settings_are_checked_and_read_from_the_environment(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    settings = ApiSettings.from_env({"NEUAVATAR_API_PORT": "6000", "NEUAVATAR_API_TOKEN_FILE": str(secret)})
    assert settings.port == 6000 and settings.token == TOKEN and TOKEN not in repr(settings)
    for env, match in (({"NEUAVATAR_API_PORT": "http"}, "must be a number"),
                       ({"NEUAVATAR_API_PORT": "70000"}, "0..65535"),
                       ({"NEUAVATAR_API_TLS_CERT": str(secret)}, "both a certificate and its key"),
                       ({"NEUAVATAR_API_TOKEN": " "}, "token is empty"),
                       ({"NEUAVATAR_API_TOKEN": "a", "NEUAVATAR_API_TOKEN_FILE": str(secret)}, "not both")):
        with pytest.raises(ConfigError, match=match):
            ApiSettings.from_env(env)


class _FakeAvatars(pb_grpc.AvatarsServicer):
    """Just enough of the Avatars service to test the client's upload and the error mapping."""

    def __init__(self):
        self.uploads: list[tuple[pb.CreateAvatarHeader, bytes]] = []

    async def CreateAvatar(self, request_iterator, context):
        header, data = None, b""
        async for message in request_iterator:
            if message.WhichOneof("part") == "header":
                header = message.header
            else:
                data += message.chunk
        self.uploads.append((header, data))
        return pb.Job(job_id="job-1", state=pb.JOB_STATE_QUEUED, source=header.filename or header.object_key)

    async def GetJob(self, request, context):
        raise RuntimeError("a bug with a secret detail")

    async def GetAvatar(self, request, context):
        raise NotFoundError(f"no avatar {request.avatar_id!r}")


def test_errors_map_to_status_codes_and_never_leak_a_traceback(tmp_path):
    fake = _FakeAvatars()
    with ServerThread([fake], ApiSettings(port=0)) as running, AvatarsClient(f"127.0.0.1:{running.port}") as avatars:
        code, details = _status(lambda: avatars.get_job("job-1"))
        assert code == grpc.StatusCode.INTERNAL and "incident" in details
        assert "secret" not in details and "Traceback" not in details
        code, details = _status(lambda: avatars.get_avatar("anna"))
        assert code == grpc.StatusCode.NOT_FOUND and "anna" in details
        code, _ = _status(lambda: avatars.delete_job("job-1"))  # not implemented by this servicer
        assert code == grpc.StatusCode.UNIMPLEMENTED
        video = tmp_path / "clip.mp4"
        video.write_bytes(np.random.default_rng(0).bytes(2_500_000))  # three chunks
        job = avatars.create_avatar(video, options={"name": "Anna", "preset": "cpu-smoke"})
        assert job.job_id == "job-1" and job.source == "clip.mp4"
        header, data = fake.uploads[-1]
        assert data == video.read_bytes() and header.size_bytes == len(data) and len(header.sha256) == 64
        assert header.options.name == "Anna"
        assert avatars.create_avatar(object_key="uploads/x/video.mp4").source == "uploads/x/video.mp4"


def test_a_token_is_required_when_configured(tiny_avatar):
    service = RendererService(mapping_source({"tiny": tiny_avatar[0].avatar_dir}), device="cpu")
    with ServerThread([service], ApiSettings(port=0, token=TOKEN)) as running:
        target = f"127.0.0.1:{running.port}"
        for token, expect in ((None, "needs a token"), ("wrong", "not valid")):
            with RendererClient(target, token=token) as c:
                code, details = _status(lambda: c.render_frame("tiny"))
                assert code == grpc.StatusCode.UNAUTHENTICATED and expect in details
                live = c.live("tiny", iter([live_request(1, controls={"jaw_open": 5})]))
                code, _ = _status(lambda: list(live))
                assert code == grpc.StatusCode.UNAUTHENTICATED  # streams too
        with RendererClient(target, token=TOKEN) as c:
            assert c.render_frame("tiny").width > 0
        assert _health(running.port, "neuavatar.v1.Renderer") == health_pb2.HealthCheckResponse.SERVING  # exempt


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_when_a_certificate_is_given(tmp_path, service):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    fake = _FakeAvatars()
    with ServerThread([fake], ApiSettings(port=0, tls_cert=cert, tls_key=key, token=TOKEN)) as running:
        target = f"127.0.0.1:{running.port}"
        with AvatarsClient(target, tls=True, root_certificates=cert.read_bytes(), server_name="localhost",
                           token=TOKEN) as avatars:
            assert avatars.create_avatar(object_key="uploads/a.mp4").job_id == "job-1"
        with AvatarsClient(target, timeout_s=5) as plain:  # no TLS: the handshake fails
            code, _ = _status(lambda: plain.create_avatar(object_key="uploads/a.mp4"))
            assert code == grpc.StatusCode.UNAVAILABLE


# --- RenderFrame ----------------------------------------------------------------------------------

def test_render_frame_returns_a_jpeg_that_follows_the_pose(client, service):
    rest = client.render_frame("tiny", request_id=7)
    image = _decode(rest)
    size = (rest.height, rest.width)
    assert image.shape == (*size, 3) and size[0] == size[1] > 0 and rest.id == 7
    assert rest.encoding == pb.ENCODING_JPEG and rest.timings.total_ms >= rest.timings.render_ms > 0
    jaw = _decode(client.render_frame("tiny", controls={"jaw_open": 25}))
    yaw = _decode(client.render_frame("tiny", controls={"head_yaw": 30}))
    for moved in (jaw, yaw):
        assert np.abs(moved.astype(int) - image).mean() > 1.0
    same = _decode(client.render_frame("tiny", params={"jaw": np.zeros(3)}))
    opened = _decode(client.render_frame("tiny", params={"jaw": [0.4, 0.0, 0.0]}))
    assert np.abs(opened.astype(int) - same).mean() > 1.0
    raw = client.render_frame("tiny", controls={"head_yaw": 500}, encoding="rgb")
    assert raw.encoding == pb.ENCODING_RGB and len(raw.data) == size[0] * size[1] * 3
    assert any("head_yaw = 500" in n for n in raw.notes)  # clamped, and said so


def test_bad_render_requests_are_invalid_argument_with_the_reason(client):
    cases = [
        (dict(params={"jaw": [1.0, 2.0]}), "jaw must have shape (3,)"),
        (dict(params={"expression": np.zeros(1000)}), "expression must have shape"),
        (dict(controls={"expression": [0.0] * 1000}), "expression coefficients"),
        (dict(controls={"jaw_open": float("nan")}), "finite"),
        (dict(quality=500), "quality must lie in 1..100"),
    ]
    for kwargs, message in cases:
        code, details = _status(lambda: client.render_frame("tiny", **kwargs))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, (kwargs, details)
    code, details = _status(lambda: client.render_frame("../../etc"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "avatar_id" in details


def test_an_unknown_avatar_is_not_found(client):
    code, details = _status(lambda: client.render_frame("nobody"))
    assert code == grpc.StatusCode.NOT_FOUND and "nobody" in details
    live = client.live("nobody", iter([live_request(1, controls={})]))
    code, _ = _status(lambda: list(live))
    assert code == grpc.StatusCode.NOT_FOUND


# --- LiveReenact ----------------------------------------------------------------------------------

class _Feed:
    """Requests for a live call, sent one at a time from the test (a generator fed by a queue)."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()

    def send(self, request) -> None:
        self._queue.put(request)

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self):
        while (request := self._queue.get()) is not None:
            yield request


def _wait_for(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_live_session_answers_in_order_survives_bad_requests_and_drops_stale_ones(client, service):
    feed = _Feed()
    call = client.live("tiny", feed)
    responses = iter(call)
    ready = next(responses).ready
    assert ready.avatar_id == "tiny" and ready.width == ready.height > 0 and ready.num_expression > 0
    bad = 5
    answers, latencies_ms = [], []
    started = time.perf_counter()
    for i in range(11):  # in step: send, wait for the answer (10 good requests and one of the wrong size)
        params = {"jaw": [1.0, 2.0]} if i == bad else {"jaw": [0.03 * i, 0.0, 0.0]}
        sent = time.perf_counter()
        feed.send(live_request(i, params=params))
        answers.append(next(responses))
        latencies_ms.append((time.perf_counter() - sent) * 1000)
    stepped = time.perf_counter() - started
    frames = [a.frame for a in answers if a.WhichOneof("event") == "frame"]
    errors = [a.error for a in answers if a.WhichOneof("event") == "error"]
    assert [f.id for f in frames] == [i for i in range(11) if i != bad]  # in order, and on after the error
    assert len(errors) == 1 and errors[0].id == bad and "jaw" in errors[0].message
    assert all(_decode(f).shape == (ready.height, ready.width, 3) for f in frames)

    feed.send(live_request(20, image=b"not an image"))  # refused before it reaches the renderer
    feed.send(pb.LiveRequest(id=21))  # no input at all
    assert [next(responses).error.id for _ in range(2)] == [20, 21]

    burst_started = time.perf_counter()
    for i in range(100, 140):  # faster than the renderer: stale requests are dropped, the latest is rendered
        feed.send(live_request(i, controls={"head_yaw": i - 120}))
    feed.end()  # half-close: the server answers what is pending, then ends the call
    burst = [r.frame for r in responses]
    burst_s = time.perf_counter() - burst_started
    assert call.code() == grpc.StatusCode.OK
    ids = [f.id for f in burst]
    assert ids == sorted(ids) and ids[-1] == 139 and len(ids) + sum(f.dropped_before for f in burst) <= 40
    assert _wait_for(lambda: service.live_sessions == 0)

    p50, p99 = np.percentile(latencies_ms, [50, 99])
    render_ms = np.median([f.timings.render_ms for f in frames])
    print(f"\nlive stream on CPU ({ready.width}x{ready.height} JPEG, loopback): in step {len(answers) / stepped:.1f} "
          f"frames/s, latency p50 {p50:.1f} ms, p99 {p99:.1f} ms (render {render_ms:.1f} ms); "
          f"burst of 40: {len(burst)} frames in {burst_s:.2f} s ({len(burst) / burst_s:.1f} frames/s), "
          f"{40 - len(burst)} dropped as stale")


def test_a_live_session_opens_from_metadata_and_closes_when_the_client_cancels(client, service):
    stub = pb_grpc.RendererStub(client.channel)
    one = stub.LiveReenact(iter([live_request(1, controls={"head_yaw": 10})]),
                           metadata=(("neuavatar-avatar-id", "tiny"),))
    assert [r.WhichOneof("event") for r in one] == ["ready", "frame"]

    feed = _Feed()
    call = client.live("tiny", feed)
    responses = iter(call)
    next(responses)
    feed.send(live_request(1, controls={"jaw_open": 10}))
    assert next(responses).frame.id == 1
    assert service.live_sessions == 1
    closed = service.stats["live_closed"]
    call.cancel()
    code, _ = _status(lambda: next(responses))
    assert code == grpc.StatusCode.CANCELLED
    assert _wait_for(lambda: service.live_sessions == 0 and service.stats["live_closed"] == closed + 1)
    feed.end()
    assert client.render_frame("tiny").width > 0  # the server is fine


# --- Reenact --------------------------------------------------------------------------------------

def test_reenact_uploads_a_driver_and_streams_back_the_video(client, make_clip, tmp_path):
    driver = make_clip(GLASSES, 10, 128)
    seen = []
    result = client.reenact("tiny", driver, tmp_path / "out.mp4", progress=seen.append)
    info = probe_video(tmp_path / "out.mp4")
    assert result.frames == 10 and result.content_type == "video/mp4" and result.seconds["total"] > 0
    assert (info.width, info.height) == (client.render_frame("tiny").width,) * 2
    assert len(list(read_frames(tmp_path / "out.mp4"))) == 10
    assert {"render"} <= {p.step for p in seen} and any(p.done == p.total == 10 for p in seen if p.step == "render")

    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    code, details = _status(lambda: client.reenact("tiny", text, tmp_path / "bad.mp4"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".*partial"))
