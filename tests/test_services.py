"""The services end to end, with real parts: SeaweedFS (S3), the session's RabbitMQ, gRPC, real clips.

The four services run in this process (``ServiceRuntime`` in threads) on a SeaweedFS server of
this module and a broker namespace of their own; the trainer's crash test runs ``neuavatar serve
trainer`` as a subprocess and kills it. Every stage is CPU-sized (64 px, a few steps): what these
tests check is the plumbing (S3 keys, queues, events, records, retries, dead letters, resume), not
the avatar's quality.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import cv2
import grpc
import numpy as np
import pika
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from neuavatar.api import ApiSettings, AvatarsClient, RendererClient, pb
from neuavatar.api.client import live_request
from neuavatar.config import to_dict
from neuavatar.errors import ConfigError
from neuavatar.messaging import (
    REASON_HEADER,
    STAGE_HEADER,
    BrokerSettings,
    Events,
    JobMessage,
    Publisher,
    delete_topology,
)
from neuavatar.services import JobStore, ServiceRuntime, ServiceSettings, StageWorker, load_settings
from neuavatar.services.jobs import check_job_id, resolve_run_config
from neuavatar.services.listing import put_avatar_meta
from neuavatar.services.logs import JsonFormatter, job_context
from neuavatar.stack.process import free_port, port_open
from neuavatar.stack.seaweed import SeaweedServer
from neuavatar.storage import ObjectStore, StorageSettings, StorageUnavailable, keys

from conftest import HEADTURNS, S3_SECRET, running_services  # and the fixtures seaweed and store

ROOT = Path(__file__).resolve().parents[1]
SHARED_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MiB = 1024 * 1024
SECRET = S3_SECRET  # the S3 secret key of the seaweed fixture
WAIT_S = 240  # the longest any job here may take on a busy 2-core machine

# Every stage as small as it goes and still makes an avatar (the cpu-smoke preset, shrunk further).
TINY_OPTIONS = {
    "preprocess.min_frames": "10", "preprocess.workers": "1", "preprocess.contact_sheet_frames": "0",
    "track.landmark_steps": "30", "track.photometric_steps": "[5]", "track.photometric_sizes": "[64]",
    "track.batch_frames": "8", "track.texture_size": "64",
    "train.steps": "[4, 4, 2]", "train.batch_size": "[1, 1, 1]", "train.checkpoint_every": "5",
    "train.eval_frames": "2", "train.reenact_frames": "2",
}


# --- fixtures ------------------------------------------------------------------------------------

def _namespace() -> BrokerSettings:
    if not port_open(5672):
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (the session broker)")
    return BrokerSettings(url=SHARED_URL, prefix=f"test-{uuid.uuid4().hex[:10]}.services", max_attempts=2,
                          reconnect_initial_seconds=0.1, reconnect_max_seconds=0.5, publish_deadline_seconds=20.0)


@contextmanager
def _channel(broker: BrokerSettings):
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def _drop(broker: BrokerSettings) -> None:
    try:
        with _channel(broker) as channel:
            delete_topology(channel, broker)
    except pika.exceptions.AMQPError:
        pass


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerSettings]:
    settings = _namespace()
    yield settings
    _drop(settings)


def _settings(seaweed: SeaweedServer, broker: BrokerSettings, work: Path, **changes) -> ServiceSettings:
    values = dict(broker=broker, storage=seaweed.settings, api=ApiSettings(port=0, grace_seconds=1.0), metrics_port=0,
                  work_dir=work, device="cpu", preset="cpu-smoke", max_upload_bytes=4 * MiB,
                  progress_interval_seconds=0.5, checkpoint_upload_seconds=0.0, stop_timeout_seconds=5.0)
    return ServiceSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def stack(seaweed, broker, tmp_path_factory) -> Iterator[dict[str, ServiceRuntime]]:
    settings = _settings(seaweed, broker, tmp_path_factory.mktemp("work"))
    with running_services(settings, ("preprocess", "tracker", "trainer", "renderer")) as runtimes:
        yield runtimes


@pytest.fixture(scope="module")
def avatars(stack) -> Iterator[AvatarsClient]:
    with AvatarsClient(f"127.0.0.1:{stack['preprocess'].port}") as client:
        yield client


def _watch(client: AvatarsClient, job_id: str, timeout_s: float = WAIT_S) -> list[pb.JobEvent]:
    return list(client.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, replay=True), timeout=timeout_s))


def _status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


@pytest.fixture(scope="module")
def finished_job(avatars, make_clip) -> tuple[pb.Job, list[pb.JobEvent], float]:
    """A real clip through every stage: (the job as created, its events, seconds taken)."""
    clip = make_clip(HEADTURNS, 20, 160)
    started = time.monotonic()
    job = avatars.create_avatar(clip, options=pb.AvatarOptions(name="headturns", preset="cpu-smoke", size=64,
                                                               config=TINY_OPTIONS))
    events = _watch(avatars, job.job_id)
    seconds = time.monotonic() - started
    t0 = events[0].time.ToDatetime()
    timeline = ", ".join(f"{pb.Stage.Name(e.stage)[6:].lower()} {pb.EventKind.Name(e.kind)[11:].lower()} "
                         f"{(e.time.ToDatetime() - t0).total_seconds():.0f}s" for e in events
                         if e.kind in (pb.EVENT_KIND_STARTED, pb.EVENT_KIND_DONE))
    print(f"job {job.job_id}: every stage in {seconds:.1f} s, {len(events)} events ({timeline})")
    return job, events, seconds


_dead: list[tuple[bytes, pika.BasicProperties]] = []


def _dead_letter(broker: BrokerSettings, match: Callable[[bytes, pika.BasicProperties], bool],
                 timeout_s: float = 30.0) -> tuple[bytes, dict]:
    """The first message in the dead-letter queue that ``match``es (waiting up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for body, properties in _dead:
            if match(body, properties):
                return body, properties.headers or {}
        with _channel(broker) as channel:
            while (got := channel.basic_get(broker.dead_letter_queue, auto_ack=True))[0] is not None:
                _dead.append((got[2], got[1]))
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching dead letter within {timeout_s} s; have {[b[:80] for b, _ in _dead]}")
        if not any(match(b, p) for b, p in _dead):
            time.sleep(0.3)


def _wait_record(jobs: JobStore, job_id: str, states: tuple[str, ...], timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = jobs.find(job_id)
        if record is not None and record.get("state") in states:
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {states}: {jobs.find(job_id)}")


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or None) or 0.0


# --- settings and small parts (no servers) -------------------------------------------------------

def test_settings_come_from_file_then_environment_then_flags_and_hide_secrets(tmp_path):
    file = tmp_path / "service.toml"
    file.write_text('metrics_port = 9101\npreset = "cpu-smoke"\n[broker]\nprefix = "from-file"\nmax_attempts = 5\n'
                    '[storage]\nbucket = "file-bucket"\n[api]\nport = 50070\n')
    token = tmp_path / "token"
    token.write_text("token-from-a-file\n")
    env = {"NEUAVATAR_BROKER_URL": "amqp://svc:broker-pass@10.0.0.5:5672/%2F", "NEUAVATAR_BROKER_PREFIX": "from-env",
           "NEUAVATAR_S3_ENDPOINT": "minio:9000", "NEUAVATAR_S3_ACCESS_KEY": "access-id",
           "NEUAVATAR_S3_SECRET_KEY": SECRET, "NEUAVATAR_API_TOKEN_FILE": str(token), "NEUAVATAR_API_PORT": "50080",
           "NEUAVATAR_METRICS_PORT": "9102", "NEUAVATAR_WORK_DIR": str(tmp_path / "w"), "NEUAVATAR_DEVICE": "cpu"}
    s = load_settings(file, environ=env, flags={"api": {"port": 50090, "host": None}, "metrics_port": None})
    assert (s.broker.prefix, s.broker.max_attempts, s.storage.bucket) == ("from-env", 5, "file-bucket")
    assert (s.api.port, s.metrics_port, s.preset, s.device) == (50090, 9102, "cpu-smoke", "cpu")
    assert s.api.token == "token-from-a-file" and s.storage.secret_key == SECRET and s.work_dir == tmp_path / "w"
    for text in (repr(s), str(s), json.dumps(s.public_dict())):
        for secret in ("broker-pass", SECRET, "token-from-a-file"):
            assert secret not in text
    assert s.public_dict()["broker"]["url"] == "amqp://svc:***@10.0.0.5:5672/%2F"

    for bad, expect in (({"NEUAVATAR_METRICS_PORT": "lots"}, "metrics_port"), ({"NEUAVATAR_PRESET": "huge"}, "huge"),
                        ({"NEUAVATAR_S3_ENDPOINT": "http://x:1"}, "host:port"),
                        ({"NEUAVATAR_API_TOKEN": "a", "NEUAVATAR_API_TOKEN_FILE": str(token)}, "not both"),
                        ({"NEUAVATAR_DEVICE": "tpu"}, "tpu"), ({"NEUAVATAR_LOG_FORMAT": "xml"}, "log_format")):
        with pytest.raises(ConfigError, match=expect):
            load_settings(environ=bad)
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(file, environ={}, flags={"colour": "red"})
    with pytest.raises(ConfigError) as caught:  # a value quoted in a message is never a secret one
        load_settings(environ={}, flags={"storage": {"secret_key": 12345678}})
    assert "12345678" not in str(caught.value) and "secret_key" in str(caught.value)


def test_job_ids_and_options_are_checked():
    assert check_job_id("a1_B-2") == "a1_B-2"
    for bad in ("", "a/b", "a.b", "x" * 65, "../x"):
        with pytest.raises(ValueError, match="job_id"):
            check_job_id(bad)
    config = resolve_run_config({"preset": "cpu-smoke", "size": 64, "config": {"train.steps": "[1, 2, 3]"}}, "gpu")
    assert (config.preprocess.size, config.train.size, config.train.steps, config.train.device) == (64, 64, (1, 2, 3),
                                                                                                    "cpu")
    for options, expect in (({"preset": "fast"}, "preset"), ({"config": {"train.colour": "1"}}, "colour"),
                            ({"config": {"paint.steps": "1"}}, "section"), ({"config": {"train.steps": "[1,"}}, "JSON"),
                            ({"config": {"train.size": "8"}}, "size")):
        with pytest.raises(ValueError, match=expect):
            resolve_run_config(options, "cpu-smoke")


# A worker process that claims a scratch area, leaves a job's half-made folder in it, says where,
# and waits for its stdin to close (then releases the area) or for the test to kill it.
_CLAIM = """
import sys
from pathlib import Path
from neuavatar.services.workdir import WorkArea
area = WorkArea.claim(Path(sys.argv[1]), sys.argv[2])
(area.path / "train-job1-x" / "avatar").mkdir(parents=True)
(area.path / "train-job1-x" / "avatar" / "checkpoint.pt").write_bytes(b"half written")
print(area.path, flush=True)
sys.stdin.read()
area.release()
"""


def _claimer(work: Path, label: str) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen([sys.executable, "-c", _CLAIM, str(work), label], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return process, Path(process.stdout.readline().strip())


def test_a_worker_removes_the_scratch_folders_of_dead_workers_and_no_others(tmp_path):
    """A stage worker killed mid-job leaves its temporary folders; the next worker on the same
    work_dir removes them when it starts, and leaves those of the workers that still run (another
    process, or another worker in its own process)."""
    work = tmp_path / "work"
    dead, dead_area = _claimer(work, "track")
    live, live_area = _claimer(work, "train")
    workers: list[StageWorker] = []
    try:
        dead.kill()
        dead.wait(10)
        assert (dead_area / "train-job1-x" / "avatar" / "checkpoint.pt").is_file()  # what a killed worker leaves
        for stage in ("track", "train"):
            workers.append(StageWorker(stage, ServiceSettings(work_dir=work, device="cpu")))
        assert not dead_area.exists() and not dead_area.with_name(dead_area.name + ".lock").exists()
        assert (live_area / "train-job1-x" / "avatar" / "checkpoint.pt").is_file(), "a live worker's folder was removed"
        assert all(w.scratch.path.is_dir() for w in workers), "a worker removed the other's folder"
        assert sorted(p.name for p in (work / "scratch").iterdir() if p.is_dir()) == sorted(
            [live_area.name, *(w.scratch.path.name for w in workers)])
        for worker in workers:
            worker.close()
        live.stdin.close()
        assert live.wait(10) == 0
        assert list((work / "scratch").iterdir()) == [], "a worker that stopped left its folder or lock"
    finally:
        for process in (dead, live):
            if process.poll() is None:
                process.kill()
        for worker in workers:
            worker.close()


# --- the job API's errors ------------------------------------------------------------------------

def test_uploads_that_cannot_be_served_get_clear_status_codes(avatars, tmp_path, store):
    uploads = store.list("uploads/")
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (5 * MiB))  # above the test stack's 4 MiB limit
    code, details = _status(lambda: avatars.create_avatar(big))  # the header announces the size
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 4194304 bytes" in details

    def unannounced():  # no size in the header: refused once the chunks pass the limit
        yield pb.CreateAvatarRequest(header=pb.CreateAvatarHeader(filename="big.mp4"))
        for _ in range(5):
            yield pb.CreateAvatarRequest(chunk=b"\0" * MiB)
    code, details = _status(lambda: avatars.stub.CreateAvatar(unannounced(), timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_upload_bytes" in details

    def mismatched():
        yield pb.CreateAvatarRequest(header=pb.CreateAvatarHeader(filename="v.mp4", sha256="0" * 64))
        yield pb.CreateAvatarRequest(chunk=b"some bytes")
    code, details = _status(lambda: avatars.stub.CreateAvatar(mismatched(), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "SHA-256" in details

    small = tmp_path / "small.mp4"
    small.write_bytes(b"not even a video")
    for options, expect in (({"preset": "fast"}, "preset"), ({"config": {"train.colour": "1"}}, "colour")):
        code, details = _status(lambda: avatars.create_avatar(small, options=options))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expect in details
    code, details = _status(lambda: avatars.create_avatar(object_key="uploads/nobody/video.mp4"))
    assert code == grpc.StatusCode.NOT_FOUND and "uploads/nobody/video.mp4" in details
    for call in (lambda: avatars.get_job("no-such-job"), lambda: avatars.get_avatar("no-such-avatar"),
                 lambda: avatars.delete_avatar("no-such-avatar"), lambda: list(avatars.watch_job("no-such-job"))):
        assert _status(call)[0] == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: avatars.get_job("../etc"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert store.list("uploads/") == uploads, "a refused upload left an object behind"


# --- end to end ----------------------------------------------------------------------------------

def test_a_clip_becomes_an_avatar_through_every_stage(finished_job, avatars, store):
    job, events, seconds = finished_job
    assert job.state == pb.JOB_STATE_QUEUED and job.source.endswith(".mp4") and job.options.name == "headturns"
    assert events[-1].kind == pb.EVENT_KIND_DONE and events[-1].stage == pb.STAGE_TRAIN, events[-1]
    seen = [(e.stage, e.kind) for e in events]
    assert (pb.STAGE_PREPROCESS, pb.EVENT_KIND_DONE) in seen  # it may have started before the watch did
    for stage in (pb.STAGE_TRACK, pb.STAGE_TRAIN):
        assert (stage, pb.EVENT_KIND_STARTED) in seen and (stage, pb.EVENT_KIND_DONE) in seen
    assert any(e.kind == pb.EVENT_KIND_PROGRESS and 0 < e.percent < 100 for e in events)
    assert any(e.kind == pb.EVENT_KIND_METRICS and "loss" in e.metrics for e in events)
    stage_order = [e.stage for e in events if e.kind == pb.EVENT_KIND_STARTED]
    assert stage_order == sorted(stage_order), "the stages ran out of order"

    done = avatars.get_job(job.job_id)
    assert (done.state, done.percent, done.avatar_id, done.error) == (pb.JOB_STATE_SUCCEEDED, 100.0, job.job_id, "")
    avatar = avatars.get_avatar(done.avatar_id)
    assert (avatar.job_id, avatar.name, avatar.size) == (job.job_id, "headturns", 64)
    assert avatar.num_expression > 0 and avatar.size_bytes > 0 and "psnr" in avatar.metrics
    assert done.avatar_id in [a.avatar_id for a in avatars.list_avatars()]
    assert job.job_id in [j.job_id for j in avatars.list_jobs(state=pb.JOB_STATE_SUCCEEDED)]
    assert [j.job_id for j in avatars.list_jobs(page_size=1)] == [j.job_id for j in avatars.list_jobs()]

    j = job.job_id
    stored = set(store.list(f"uploads/{j}/") + store.list(f"datasets/{j}/") + store.list(f"tracking/{j}/")
                 + store.list(f"avatars/{j}/"))
    assert stored == {keys.upload_key(j, "mp4"), keys.dataset_key(j), keys.tracking_key(j), keys.avatar_key(j),
                      keys.avatar_meta_key(j)}
    assert not store.exists(keys.resume_key(j)), "the resumable checkpoint outlived the finished job"
    record_text = store.get_bytes(keys.job_key(j)).decode()
    record = json.loads(record_text)
    assert set(record["settings"]) == {"preprocess", "track", "train"} and record["config"]["train"]["size"] == 64
    assert SECRET not in record_text and record["settings"]["train"]["storage"]["secret_key"] == "***"
    print(f"end to end in {seconds:.1f} s")


def test_the_renderer_serves_the_new_avatar_from_the_store(finished_job, stack):
    avatar_id = finished_job[0].job_id
    with RendererClient(f"127.0.0.1:{stack['renderer'].port}") as renderer:
        frame = renderer.render_frame(avatar_id, controls={"jaw_open": 15, "head_yaw": 10}, request_id=7)
        image = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        assert (frame.id, frame.width, frame.height) == (7, 64, 64) and image.shape == (64, 64, 3)
        assert image.std() > 5, "the frame is blank"
        requests = (live_request(i, params={"jaw": [0.05 * i, 0.0, 0.0]}) for i in range(1, 4))
        responses = list(renderer.live(avatar_id, requests))
    assert responses[0].WhichOneof("event") == "ready" and responses[0].ready.width == 64
    frames = [r.frame for r in responses[1:] if r.WhichOneof("event") == "frame"]
    assert frames and frames[-1].id == 3 and sum(1 + f.dropped_before for f in frames) == 3
    assert _status(lambda: RendererClient(f"127.0.0.1:{stack['renderer'].port}").render_frame("missing-avatar")
                   )[0] == grpc.StatusCode.NOT_FOUND

    with urllib.request.urlopen(f"http://127.0.0.1:{stack['renderer'].metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    for name in ('neuavatar_jobs_completed_total{stage="train"}', 'neuavatar_frames_rendered_total{rpc="RenderFrame"}',
                 "neuavatar_stream_latency_seconds_count", 'neuavatar_queue_lag_seconds_count{stage="track"}',
                 'neuavatar_stage_duration_seconds_count{stage="preprocess"}', "neuavatar_train_loss",
                 'neuavatar_jobs_created_total{source="filename"}'):
        assert name in text, f"{name} missing from /metrics"
    assert _metric("neuavatar_frames_rendered_total", rpc="LiveReenact") >= 1


# --- failures ------------------------------------------------------------------------------------

def test_a_corrupt_video_fails_its_job_with_a_clear_message(avatars, stack, broker, store, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(20_000))
    failed_before = _metric("neuavatar_jobs_failed_total", stage="preprocess", outcome="permanent")
    job = avatars.create_avatar(broken, options={"preset": "cpu-smoke"})
    events = _watch(avatars, job.job_id, timeout_s=60)
    assert events[-1].kind == pb.EVENT_KIND_FAILED and events[-1].stage == pb.STAGE_PREPROCESS
    assert "is not a readable video" in events[-1].message and f"uploads/{job.job_id}/video.mp4" in events[-1].message
    record = avatars.get_job(job.job_id)
    assert record.state == pb.JOB_STATE_FAILED and "is not a readable video" in record.error
    body, headers = _dead_letter(broker, lambda b, p: job.job_id.encode() in b)
    assert headers[STAGE_HEADER] == "preprocess" and "not a readable video" in headers[REASON_HEADER]
    assert headers.get("x-neuavatar-attempt", 1) == 1, "an input error was retried"
    assert _metric("neuavatar_jobs_failed_total", stage="preprocess", outcome="permanent") == failed_before + 1
    assert stack["preprocess"].failure is None and stack["preprocess"].worker.connected

    avatars.delete_job(job.job_id)  # a failed job goes away with its upload
    assert _status(lambda: avatars.get_job(job.job_id))[0] == grpc.StatusCode.NOT_FOUND
    assert not store.list(f"uploads/{job.job_id}/")


def test_a_malformed_message_is_dead_lettered_with_its_reason(stack, broker):
    with Publisher(broker) as publisher:
        publisher.publish("", broker.job_queue("preprocess"), b'{"job_id": "x", "stage": ', message_id="malformed-1")
        publisher.publish("", broker.job_queue("track"), JobMessage("wrong-queue", "train").to_json(),
                          message_id="malformed-2")
    _, headers = _dead_letter(broker, lambda b, p: p.message_id == "malformed-1")
    assert headers[STAGE_HEADER] == "preprocess" and "body is not JSON" in headers[REASON_HEADER]
    _, headers = _dead_letter(broker, lambda b, p: p.message_id == "malformed-2")
    assert headers[STAGE_HEADER] == "track" and "'train' job arrived on the 'track' queue" in headers[REASON_HEADER]
    assert all(r.failure is None for r in stack.values())


def test_a_missing_input_object_fails_the_job_clearly(stack, broker, store):
    job_id = uuid.uuid4().hex
    missing = keys.dataset_key(job_id)
    with Publisher(broker) as publisher, Events(broker).subscribe(job_id) as events:
        publisher.publish_job(JobMessage(job_id, "track", {"dataset": missing}, {}))
        failed = next(e for e in events if e.kind == "failed")
    assert failed.stage == "track" and f"no object {missing!r}" in failed.message
    record = _wait_record(JobStore(store), job_id, ("failed",))
    assert f"no object {missing!r}" in record["error"] and record["stage"] == "track"
    _, headers = _dead_letter(broker, lambda b, p: job_id.encode() in b)
    assert "no object" in headers[REASON_HEADER] and headers[STAGE_HEADER] == "track"


def test_deleting_a_running_job_stops_it_and_discards_its_output(avatars, stack, store, make_clip):
    key = "incoming/headturns.mp4"  # a video already in the store
    store.put_file(key, make_clip(HEADTURNS, 20, 160))
    stopped = sum(_metric("neuavatar_jobs_cancelled_total", stage=s) for s in ("preprocess", "track", "train"))
    job = avatars.create_avatar(object_key=key, options=pb.AvatarOptions(preset="cpu-smoke", size=64,
                                                                         config=TINY_OPTIONS))
    assert job.source == key and job.state == pb.JOB_STATE_QUEUED
    call = avatars.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60)
    for event in call:
        if event.kind == pb.EVENT_KIND_PROGRESS and event.percent > 0:
            break
    call.cancel()
    avatars.delete_job(job.job_id)
    deadline = time.monotonic() + 60
    while sum(_metric("neuavatar_jobs_cancelled_total", stage=s) for s in ("preprocess", "track", "train")) == stopped:
        assert time.monotonic() < deadline, "the deleted job's stage never stopped"
        time.sleep(0.2)
    assert _status(lambda: avatars.get_job(job.job_id))[0] == grpc.StatusCode.NOT_FOUND
    for prefix in ("datasets", "tracking", "avatars", "uploads"):
        assert not store.list(f"{prefix}/{job.job_id}/"), prefix
    assert store.exists(key), "deleting a job removed the video it was made from"


def test_a_store_outage_is_retried_and_fails_the_job_only_on_the_last_attempt(seaweed, broker, tmp_path):
    away = StorageSettings(endpoint=f"127.0.0.1:{free_port()}", access_key="svc-access", secret_key=SECRET,
                           bucket="neuavatar-services", retry_attempts=1, connect_timeout_seconds=0.5)
    stage = StageWorker("track", _settings(seaweed, broker, tmp_path, storage=away))
    job_id = uuid.uuid4().hex
    job = JobMessage(job_id, "track", {"dataset": keys.dataset_key(job_id)}, {})
    retried = _metric("neuavatar_jobs_failed_total", stage="track", outcome="retry")
    failed = _metric("neuavatar_jobs_failed_total", stage="track", outcome="permanent")
    try:
        with Events(broker).subscribe(job_id) as events:
            with pytest.raises(StorageUnavailable):  # not BadMessage: the worker tries it again
                stage.handle(job)
            assert _metric("neuavatar_jobs_failed_total", stage="track", outcome="retry") == retried + 1
            with pytest.raises(StorageUnavailable):  # the last attempt: the job fails (the worker dead-letters it)
                stage.handle(JobMessage(job_id, "track", job.inputs, {}, attempt=broker.max_attempts))
            assert _metric("neuavatar_jobs_failed_total", stage="track", outcome="permanent") == failed + 1
            event = next(iter(events))
        assert event.kind == "failed" and "unavailable" in event.message
    finally:
        stage.close()


# --- idempotency ---------------------------------------------------------------------------------

def test_the_same_job_delivered_twice_is_done_once_and_then_skipped(seaweed, store, make_clip, tmp_path):
    """A namespace with only a preprocess worker: the same message twice gives one dataset (the
    second run finds it and skips), and the next stage is queued each time (at least once)."""
    broker = _namespace()
    stage = StageWorker("preprocess", _settings(seaweed, broker, tmp_path))
    worker = stage.worker()
    thread = worker.start()
    try:
        assert worker.wait_connected(30)
        job_id = uuid.uuid4().hex
        video = keys.upload_key(job_id, "mp4")
        store.put_file(video, make_clip(HEADTURNS, 20, 160))
        config = resolve_run_config({"preset": "cpu-smoke", "size": 64, "config": TINY_OPTIONS}, "cpu-smoke")
        JobStore(store).create(job_id, source="test", options={}, config=to_dict(config))
        message = JobMessage(job_id, "preprocess", {"video": video}, to_dict(config))
        skipped = _metric("neuavatar_jobs_skipped_total", stage="preprocess")
        with Publisher(broker) as publisher, Events(broker).subscribe(job_id, timeout_seconds=WAIT_S) as events:
            publisher.publish_job(message, message_id=f"{job_id}-preprocess")
            publisher.publish_job(message, message_id=f"{job_id}-preprocess")
            done = []
            for event in events:
                assert event.kind != "failed", event
                if event.kind == "done":
                    done.append(event)
                    if len(done) == 2:
                        break
        assert "skipped" not in done[0].message and "skipped" in done[1].message
        assert store.list(f"datasets/{job_id}/") == [keys.dataset_key(job_id)]
        assert _metric("neuavatar_jobs_skipped_total", stage="preprocess") == skipped + 1
        with _channel(broker) as channel:
            queued = channel.queue_declare(broker.job_queue("track"), passive=True).method.message_count
        assert queued == 2
        record = JobStore(store).get(job_id)
        assert (record["state"], record["stage"]) == ("queued", "track")
    finally:
        worker.stop()
        thread.join(30)
        stage.close()
        _drop(broker)


# --- the command line and a crash ----------------------------------------------------------------

def _service_env(seaweed: SeaweedServer, broker: BrokerSettings, work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUAVATAR_")}
    s = seaweed.settings
    env.update({"NEUAVATAR_BROKER_URL": broker.url, "NEUAVATAR_BROKER_PREFIX": broker.prefix,
                "NEUAVATAR_S3_ENDPOINT": s.endpoint, "NEUAVATAR_S3_ACCESS_KEY": s.access_key,
                "NEUAVATAR_S3_SECRET_KEY": s.secret_key, "NEUAVATAR_S3_BUCKET": s.bucket,
                "NEUAVATAR_WORK_DIR": str(work), "NEUAVATAR_DEVICE": "cpu", "NEUAVATAR_PRESET": "cpu-smoke", **extra})
    return env


def _serve(name: str, env: dict[str, str], log: Path, *flags: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "neuavatar", "serve", name, *flags], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)


def _health(port: int) -> int | None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return None


def test_serve_runs_a_service_and_stops_cleanly_on_sigterm(seaweed, tmp_path):
    broker = _namespace()
    api, metrics_port = free_port(), free_port()
    log = tmp_path / "tracker.log"
    process = _serve("tracker", _service_env(seaweed, broker, tmp_path), log, "--api-port", str(api),
                     "--metrics-port", str(metrics_port))
    try:
        deadline = time.monotonic() + 60
        while _health(api) != health_pb2.HealthCheckResponse.SERVING:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
            assert b"neuavatar_jobs_received_total" in page.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        _drop(broker)
    text = log.read_text()
    assert "tracker service stopped" in text and SECRET not in text and "guest:guest" not in text

    bad = subprocess.run([sys.executable, "-m", "neuavatar", "serve", "tracker"], capture_output=True, text=True,
                         env=_service_env(seaweed, broker, tmp_path, NEUAVATAR_METRICS_PORT="many"), timeout=60)
    assert bad.returncode == 2 and "metrics_port" in bad.stderr and "Traceback" not in bad.stderr


def test_a_killed_trainer_resumes_from_its_uploaded_checkpoint(finished_job, seaweed, store, tmp_path):
    """kill -9 the trainer mid-training; a new one gets the redelivered job, downloads the
    checkpoint the first one uploaded and finishes from there."""
    source = finished_job[0].job_id  # its dataset and tracking are in the store already
    broker = _namespace()
    job_id = uuid.uuid4().hex
    config = resolve_run_config({"preset": "cpu-smoke", "size": 64,
                                 "config": {**TINY_OPTIONS, "train.steps": "[30, 2, 2]"}}, "cpu-smoke")
    jobs = JobStore(store)
    jobs.create(job_id, source="test", options={"name": "resumed"}, config=to_dict(config), stage="train")
    env = _service_env(seaweed, broker, tmp_path, NEUAVATAR_CHECKPOINT_UPLOAD_SECONDS="0")
    log = tmp_path / "trainer.log"
    flags = ("--api-port", "0", "--metrics-port", "0")
    first = _serve("trainer", env, log, *flags)
    second = None
    try:
        with Publisher(broker) as publisher:
            publisher.publish_job(JobMessage(job_id, "train", {"dataset": keys.dataset_key(source),
                                                               "tracking": keys.tracking_key(source)}, to_dict(config)))
        deadline = time.monotonic() + WAIT_S
        while not store.exists(keys.resume_key(job_id)):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert jobs.get(job_id)["state"] == "running"
        second = _serve("trainer", env, log, *flags)
        record = _wait_record(jobs, job_id, ("done", "failed"), timeout_s=WAIT_S)
        assert record["state"] == "done", record
        resumed = record.get("resumed_from")
        assert resumed and (resumed["stage"], resumed["step"]) > (0, 0), record
        assert store.get_json(keys.avatar_meta_key(job_id))["resumed_from"] == resumed
        assert "resumes from its uploaded checkpoint" in log.read_text()
        assert not store.exists(keys.resume_key(job_id))
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        _drop(broker)


def test_jobs_and_avatars_page_through_and_avatars_can_be_deleted(finished_job, avatars, store):
    extra = uuid.uuid4().hex  # a second job and avatar beside the finished one, whatever ran before
    JobStore(store).create(extra, source="test", options={}, config={})
    put_avatar_meta(store, {"avatar_id": extra, "job_id": extra, "created": "2001-01-01T00:00:00Z"})
    jobs = [j.job_id for j in avatars.list_jobs()]
    assert len(jobs) >= 2 and [j.job_id for j in avatars.list_jobs(page_size=1)] == jobs
    made = [a.avatar_id for a in avatars.list_avatars()]
    assert len(made) >= 2 and [a.avatar_id for a in avatars.list_avatars(page_size=1)] == made
    assert _status(lambda: avatars.stub.ListJobs(pb.ListJobsRequest(page_token="nonsense"))
                   )[0] == grpc.StatusCode.INVALID_ARGUMENT
    doomed = extra
    avatars.delete_avatar(doomed)
    assert _status(lambda: avatars.get_avatar(doomed))[0] == grpc.StatusCode.NOT_FOUND
    assert doomed not in [a.avatar_id for a in avatars.list_avatars()]


def _pages(call: Callable[[str], tuple[list[str], str]]) -> list[list[str]]:
    """Every page of a listing, each a list of ids, following next_page_token."""
    pages, token = [], ""
    while True:
        ids, token = call(token)
        pages.append(ids)
        if not token:
            return pages


def test_jobs_and_avatars_are_listed_a_page_at_a_time_reading_only_that_page(seaweed, tmp_path, caplog):
    """In a bucket of its own: jobs and avatars come newest first over several pages, a state
    filter pages too, records from before the index are found (indexed at start-up), stale index
    entries are dropped, and a page reads only its own records (an unreadable one on the last
    page does not touch the first)."""
    storage = dataclasses.replace(seaweed.settings, bucket=f"listing-{uuid.uuid4().hex[:8]}")
    store = ObjectStore(storage)
    store.ensure_bucket()
    jobs = JobStore(store)
    made = [jobs.create(f"job{i}", source="test", options={}, config={}) for i in range(7)]
    for record in made[1::2]:
        jobs.update(record["job_id"], state="done")
    # Written as an older version did, without index entries: found once the job API starts.
    legacy = {"job_id": "legacy", "state": "done", "created": "2001-01-01T00:00:00.000Z"}
    store.put_json(keys.job_key("legacy"), legacy)
    store.put_json(keys.avatar_meta_key("legacy-avatar"), {"avatar_id": "legacy-avatar",
                                                           "created": "2001-01-01T00:00:00Z"})
    for i in range(5):
        put_avatar_meta(store, {"avatar_id": f"avatar{i}", "job_id": f"job{i}",
                                "created": f"2024-0{i + 1}-01T00:00:00Z"})
    newest_first = [r["job_id"] for r in sorted(made, key=lambda r: (r["created"], -int(r["job_id"][3:])),
                                                reverse=True)] + ["legacy"]
    broker = _namespace()
    try:
        with ServiceRuntime("preprocess", _settings(seaweed, broker, tmp_path, storage=storage)) as runtime, \
                AvatarsClient(f"127.0.0.1:{runtime.port}") as avatars:
            def job_page(token: str, size: int = 3, state: int = pb.JOB_STATE_UNSPECIFIED) -> tuple[list[str], str]:
                page = avatars.stub.ListJobs(pb.ListJobsRequest(page_size=size, page_token=token, state=state))
                return [j.job_id for j in page.jobs], page.next_page_token

            def avatar_page(token: str) -> tuple[list[str], str]:
                page = avatars.stub.ListAvatars(pb.ListAvatarsRequest(page_size=2, page_token=token))
                return [a.avatar_id for a in page.avatars], page.next_page_token

            assert _pages(job_page) == [newest_first[:3], newest_first[3:6], newest_first[6:]]
            assert [j.job_id for j in avatars.list_jobs()] == newest_first  # the client CLI's way: one page
            done = [j for j in newest_first if jobs.get(j)["state"] == "done"]
            assert sum(_pages(lambda token: job_page(token, 2, pb.JOB_STATE_SUCCEEDED)), []) == done
            assert _pages(avatar_page) == [["avatar4", "avatar3"], ["avatar2", "avatar1"], ["avatar0", "legacy-avatar"]]

            avatars.delete_job("job2")
            store.delete(keys.job_key("job4"))  # gone behind the index's back
            avatars.delete_avatar("avatar3")
            left = [j for j in newest_first if j not in ("job2", "job4")]
            assert sum(_pages(job_page), []) == left
            assert sum(_pages(avatar_page), []) == ["avatar4", "avatar2", "avatar1", "avatar0", "legacy-avatar"]
            index = store.list("index/")
            assert len(index) == len(left) + 5 and not [k for k in index if k.endswith(("-job2", "-job4", "-avatar3"))]

            # An unreadable record on the last page: the first page never reads it.
            store.put_bytes(keys.job_key(left[-2]), b"not json")
            caplog.clear()
            with caplog.at_level("WARNING", logger="neuavatar.services"):
                first, token = job_page("")
                assert first == left[:3] and token and "skipping" not in caplog.text
                assert sum(_pages(job_page), []) == left[:-2] + left[-1:]
                assert f"skipping {left[-2]}" in caplog.text
    finally:
        _drop(broker)


def test_the_avatar_source_fetches_once_and_again_when_the_avatar_changes(store, tmp_path):
    from neuavatar.services import s3_avatar_source

    made = tmp_path / "made"
    made.mkdir()
    (made / "avatar.pt").write_bytes(b"first")
    store.put_dir(keys.avatar_key("cached-avatar"), made)
    source = s3_avatar_source(store, tmp_path / "cache")
    first = source("cached-avatar")
    assert (first / "avatar.pt").read_bytes() == b"first"
    (first / "marker").write_text("still the same download")
    assert (source("cached-avatar") / "marker").exists()  # not fetched again
    (made / "avatar.pt").write_bytes(b"second")
    store.put_dir(keys.avatar_key("cached-avatar"), made)
    again = source("cached-avatar")
    assert (again / "avatar.pt").read_bytes() == b"second" and not (again / "marker").exists()
    from neuavatar.api.errors import NotFoundError

    with pytest.raises(NotFoundError):
        source("no-such-avatar")


def test_service_modules_do_not_log_secrets(caplog, seaweed, broker, tmp_path):
    settings = _settings(seaweed, broker, tmp_path)
    with caplog.at_level("INFO", logger="neuavatar.services"):
        with ServiceRuntime("renderer", settings):
            pass
    assert "starting the renderer service" in caplog.text and SECRET not in caplog.text


def test_json_logs_are_one_object_per_line_naming_the_job_and_hiding_secrets(seaweed, tmp_path):
    """``neuavatar serve tracker`` with NEUAVATAR_LOG_FORMAT=json, given a job that fails: every line
    it writes is a JSON object with time, level, logger and message; the job's lines carry its
    job_id and stage; no secret appears, not even inside an exception's message."""
    broker = _namespace()
    log = tmp_path / "tracker.log"
    process = _serve("tracker", _service_env(seaweed, broker, tmp_path, NEUAVATAR_LOG_FORMAT="json"), log,
                     "--api-port", "0", "--metrics-port", "0")
    job_id = uuid.uuid4().hex
    try:
        with Publisher(broker) as publisher, Events(broker).subscribe(job_id, timeout_seconds=60) as events:
            publisher.publish_job(JobMessage(job_id, "track", {"dataset": keys.dataset_key(job_id)}, {}))
            assert any(e.kind == "failed" for e in events), log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        _drop(broker)
    text = log.read_text()
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).tzinfo is not None
    about = [line for line in lines if line.get("job_id") == job_id]
    assert any(a["level"] == "ERROR" and a["stage"] == "track" and a["logger"] == "neuavatar.services"
               and "failed" in a["message"] for a in about), about
    assert any(a["logger"] == "neuavatar.messaging.worker" and "dead-lettering" in a["message"] for a in about), about
    assert any(line["message"] == "tracker service stopped" for line in lines)
    assert SECRET not in text and "guest:guest" not in text

    # A secret that a library echoes back (here in an exception) is hidden too.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter([SECRET]))
    logger = logging.getLogger(f"test.json.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise PermissionError(f"signature mismatch for key {SECRET}")
    except PermissionError:
        with job_context("job-7", "train"):
            logger.exception("upload of %s failed", SECRET)
    line = json.loads(out.getvalue())
    assert (line["job_id"], line["stage"], line["level"]) == ("job-7", "train", "ERROR")
    assert line["message"] == "upload of *** failed" and "PermissionError: signature mismatch for key ***" in \
        line["exception"] and SECRET not in out.getvalue()
