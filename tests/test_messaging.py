"""The messaging layer against real RabbitMQ brokers (no mocks).

Most tests use the machine's broker on 127.0.0.1:5672 (or, where none runs, the isolated node),
each under its own name prefix, deleted afterwards. The restart tests get an isolated node from
:mod:`neuavatar.stack.rabbit` that they stop and start again on the same ports and data.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pytest

from neuavatar.errors import ConfigError
from neuavatar.messaging import (
    ATTEMPT_HEADER,
    REASON_HEADER,
    STAGE_HEADER,
    BadMessage,
    BrokerSettings,
    BrokerUnavailable,
    Event,
    Events,
    JobMessage,
    Publisher,
    Unroutable,
    Worker,
    delete_topology,
)
from neuavatar.stack import rabbit
from neuavatar.stack.process import port_open
from neuavatar.stack.rabbit import RabbitMQNotInstalled, RabbitNode

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
FAST = dict(reconnect_initial_seconds=0.1, reconnect_max_seconds=0.5, publish_deadline_seconds=20.0)


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[RabbitNode]:
    try:
        rabbit.ensure_rabbitmq_installed()
    except RabbitMQNotInstalled as e:
        pytest.skip(str(e))
    node = RabbitNode.create(tmp_path_factory.mktemp("rabbit"))
    node.start()
    print(f"isolated RabbitMQ {node.node_name} ready in {node.start_seconds:.1f} s")
    yield node
    node.stop()
    assert not port_open(node.amqp_port) and not port_open(node.epmd_port)


def _settings(url: str, **kwargs) -> Iterator[BrokerSettings]:
    settings = BrokerSettings(url=url, prefix=f"test-{uuid.uuid4().hex[:12]}.neuavatar", **{**FAST, **kwargs})
    yield settings
    try:
        with _channel(settings) as channel:
            delete_topology(channel, settings)
    except pika.exceptions.AMQPError:
        pass


@pytest.fixture
def settings(request) -> Iterator[BrokerSettings]:
    """A unique namespace on the shared broker (the isolated node where none runs)."""
    url = SHARED_URL if port_open(5672) else request.getfixturevalue("node").url
    yield from _settings(url)


@pytest.fixture
def isolated(node) -> Iterator[tuple[RabbitNode, BrokerSettings]]:
    for settings in _settings(node.url):
        yield node, settings


@contextmanager
def _channel(settings: BrokerSettings):
    connection = pika.BlockingConnection(pika.URLParameters(settings.url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def _depth(settings: BrokerSettings, queue: str) -> int:
    with _channel(settings) as channel:
        return channel.queue_declare(queue, passive=True).method.message_count


def _take_all(settings: BrokerSettings, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    out = []
    with _channel(settings) as channel:
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((properties, body))


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def _running(worker: Worker):
    thread = worker.start()
    try:
        assert worker.wait_connected(15), "the worker did not connect"
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


# Settings and parsing ---------------------------------------------------------------------------

def test_settings_hide_the_password_and_reject_bad_values():
    settings = BrokerSettings(url="amqp://svc:s3cret@broker:5672/%2F")
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.safe_url
    assert settings.job_queue("train") == "neuavatar.jobs.train"
    assert (settings.dead_exchange, settings.dead_letter_queue, settings.events_exchange) == (
        "neuavatar.dead", "neuavatar.dead-letter", "neuavatar.events")
    for bad in (dict(url="http://x"), dict(prefetch=0), dict(max_attempts=0), dict(prefix="a..b"),
                dict(publish_deadline_seconds=0)):
        with pytest.raises(ConfigError):
            BrokerSettings(**bad)


def test_job_message_round_trips_and_parses_strictly():
    job = JobMessage("job-1", "track", {"dataset": "datasets/job-1/dataset.tar"}, {"steps": 10})
    assert JobMessage.from_json(job.to_json(), attempt=2) == JobMessage(**{**job.__dict__, "attempt": 2})
    for body, reason in [(b"{not json", "not JSON"), (b"\xff", "not UTF-8"), (b"[]", "JSON object"),
                         (b'{"job_id":"a","stage":"track","inputs":{},"config":{},"x":1}', "unexpected"),
                         (b'{"job_id":"a","job_id":"b","stage":"track","inputs":{},"config":{}}', "duplicate"),
                         (b'{"job_id":"a.b","stage":"track","inputs":{},"config":{}}', "job_id"),
                         (b'{"job_id":"a","stage":"render","inputs":{},"config":{}}', "stage"),
                         (b'{"job_id":"a","stage":"track","inputs":{"v":1},"config":{}}', "inputs"),
                         (b'{"job_id":"a","stage":"track","inputs":{},"config":{"x":NaN}}', "NaN")]:
        with pytest.raises(BadMessage, match=reason):
            JobMessage.from_json(body)
    with pytest.raises(BadMessage, match="on the 'preprocess' queue"):
        JobMessage.from_delivery(job.to_json(), content_type="application/json", headers=None, message_id=None,
                                 redelivered=False, expected_stage="preprocess")
    with pytest.raises(BadMessage, match=ATTEMPT_HEADER):
        JobMessage.from_delivery(job.to_json(), content_type=None, headers={ATTEMPT_HEADER: "2"}, message_id=None,
                                 redelivered=False, expected_stage="track")


def test_missing_rabbitmq_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(rabbit, "RABBITMQ_SERVER", tmp_path / "no-such-rabbitmq-server")
    with pytest.raises(RabbitMQNotInstalled, match="apt-get install -y --no-install-recommends rabbitmq-server"):
        RabbitNode.create(tmp_path).start()


# Publisher and worker on the shared broker ------------------------------------------------------

def test_publish_round_trip_with_confirms(settings):
    with Publisher(settings) as publisher:
        job = JobMessage("job-rt", "preprocess", {"video": "uploads/job-rt/video.mp4"}, {"size": 512})
        message_id = publisher.publish_job(job)
        with pytest.raises(Unroutable, match="no queue is bound"):
            publisher.publish("", f"{settings.prefix}.no-such-queue", b"{}")
    [(properties, body)] = _take_all(settings, settings.job_queue("preprocess"))
    assert properties.message_id == message_id and properties.delivery_mode == 2
    assert properties.content_type == "application/json" and properties.headers[ATTEMPT_HEADER] == 1
    assert JobMessage.from_json(body, message_id=message_id) == JobMessage(**{**job.__dict__, "message_id": message_id})


def test_handler_success_acks(settings):
    seen: list[JobMessage] = []
    with Publisher(settings) as publisher, _running(Worker(settings, "track", seen.append)):
        ids = [publisher.publish_job(JobMessage(f"ok-{i}", "track")) for i in range(3)]
        assert _wait(lambda: len(seen) == 3)
    assert [j.job_id for j in seen] == ["ok-0", "ok-1", "ok-2"] and [j.message_id for j in seen] == ids
    assert _depth(settings, settings.job_queue("track")) == 0  # acked: nothing came back when the worker left
    assert _depth(settings, settings.dead_letter_queue) == 0


def test_handler_failure_retries_then_dead_letters(settings):
    attempts: dict[str, list[int]] = {"flaky": [], "broken": [], "invalid": []}

    def handler(job: JobMessage) -> None:
        attempts[job.job_id].append(job.attempt)
        if job.job_id == "invalid":
            raise BadMessage("inputs name no video")  # no point retrying
        if job.job_id == "broken" or job.attempt == 1:
            raise RuntimeError(f"boom on attempt {job.attempt}")

    with Publisher(settings) as publisher, _running(Worker(settings, "train", handler)):
        message_id = publisher.publish_job(JobMessage("broken", "train"))
        publisher.publish_job(JobMessage("flaky", "train"))
        publisher.publish_job(JobMessage("invalid", "train"))
        assert _wait(lambda: _depth(settings, settings.dead_letter_queue) == 2 and len(attempts["flaky"]) == 2)
    assert attempts == {"flaky": [1, 2], "broken": [1, 2, 3], "invalid": [1]}  # max_attempts = 3
    dead = {JobMessage.from_json(body).job_id: p for p, body in _take_all(settings, settings.dead_letter_queue)}
    assert "attempt 1 of 3: BadMessage: inputs name no video" in dead["invalid"].headers[REASON_HEADER]
    properties = dead["broken"]
    assert properties.message_id == message_id
    assert properties.headers[STAGE_HEADER] == "train" and properties.headers[ATTEMPT_HEADER] == 3
    assert "attempt 3 of 3" in properties.headers[REASON_HEADER]
    assert "RuntimeError: boom on attempt 3" in properties.headers[REASON_HEADER]
    assert _depth(settings, settings.job_queue("train")) == 0


def test_malformed_message_dead_letters_immediately(settings):
    seen: list[JobMessage] = []
    with Publisher(settings) as publisher, _running(Worker(settings, "preprocess", seen.append)):
        publisher.publish("", settings.job_queue("preprocess"), b'{"job_id": "x", "stage": ', message_id="bad-json")
        publisher.publish("", settings.job_queue("preprocess"), JobMessage("y", "train").to_json(),
                          message_id="wrong-stage")
        assert _wait(lambda: _depth(settings, settings.dead_letter_queue) == 2)
    assert seen == []
    dead = {p.message_id: p.headers for p, _ in _take_all(settings, settings.dead_letter_queue)}
    assert dead["bad-json"][REASON_HEADER].startswith("bad message: body is not JSON")
    assert "'train' job arrived on the 'preprocess' queue" in dead["wrong-stage"][REASON_HEADER]
    assert {h[STAGE_HEADER] for h in dead.values()} == {"preprocess"}
    assert _depth(settings, settings.job_queue("preprocess")) == 0


def test_long_handler_keeps_its_connection_and_stop_drains(settings):
    """A 1 s heartbeat and a 3.5 s handler: the handler thread keeps heartbeats going, and stop()
    mid-job waits for the job and acks it (a lost connection would redeliver it)."""
    settings = BrokerSettings(**{**settings.__dict__, "heartbeat_seconds": 1})
    started = threading.Event()
    seen: list[JobMessage] = []

    def handler(job: JobMessage) -> None:
        started.set()
        time.sleep(3.5)
        seen.append(job)

    with Publisher(settings) as publisher:
        worker = Worker(settings, "train", handler)
        with _running(worker):
            publisher.publish_job(JobMessage("long", "train"))
            assert started.wait(10)
            time.sleep(0.5)
        # _running stopped it mid-job: stop() returned only after the job finished
    assert [(j.job_id, j.redelivered) for j in seen] == [("long", False)]
    assert _depth(settings, settings.job_queue("train")) == 0


def test_events_subscription_receives_its_job_only(settings):
    with Events(settings) as events, events.subscribe("job-a", timeout_seconds=1.0) as subscription:
        events.emit("job-a", "preprocess", "started")
        events.emit("job-b", "preprocess", "progress", percent=50.0)
        events.emit("job-a", "train", "progress", percent=42.5, message="step 425", metrics={"psnr": 27.5})
        events.emit("job-a", "train", "done")
        received = list(subscription)  # ends after 1 s without events
    assert [(e.stage, e.kind, e.percent) for e in received] == [
        ("preprocess", "started", None), ("train", "progress", 42.5), ("train", "done", None)]
    assert {e.job_id for e in received} == {"job-a"} and received[1].metrics == {"psnr": 27.5}
    assert received[0].time.endswith("Z") and Event.from_json(received[1].to_json()) == received[1]
    with pytest.raises(BadMessage, match="kind"):
        Event("job-a", "train", "finished")


# Broker restarts on the isolated node -----------------------------------------------------------

def test_worker_survives_a_broker_restart(isolated):
    node, settings = isolated
    calls: list[tuple[str, bool]] = []
    held, release = threading.Event(), threading.Event()

    def handler(job: JobMessage) -> None:
        calls.append((job.job_id, job.redelivered))
        if job.job_id == "held":
            held.set()
            release.wait(30)

    worker = Worker(settings, "preprocess", handler)
    with Publisher(settings) as publisher, _running(worker):
        publisher.publish_job(JobMessage("held", "preprocess"))
        assert held.wait(10)
        publisher.publish_job(JobMessage("queued", "preprocess"))  # waits: prefetch 1, "held" unacked
        node.stop()
        assert _wait(lambda: not worker.connected, 10)
        release.set()  # "held" finishes while the broker is down: its ack is lost
        node.start()
        assert worker.wait_connected(30)
        assert _wait(lambda: len(calls) == 3, 20), calls
    assert calls.count(("queued", False)) == 1 and [c for c in calls if c[0] == "queued"] == [("queued", False)]
    assert calls[0] == ("held", False) and ("held", True) in calls  # redelivered after the restart
    assert _depth(settings, settings.job_queue("preprocess")) == 0


def test_publisher_waits_through_a_broker_restart(isolated):
    node, settings = isolated
    with Publisher(settings) as publisher:
        publisher.publish_job(JobMessage("before", "track"))
        node.stop()
        with pytest.raises(BrokerUnavailable, match="unreachable for 1 s"):
            publisher.publish_job(JobMessage("given-up", "track"), deadline_seconds=1.0)
        result: dict[str, object] = {}

        def publish() -> None:
            try:
                result["id"] = publisher.publish_job(JobMessage("during", "track"), deadline_seconds=60.0)
            except Exception as e:  # reported by the assertion below
                result["error"] = e

        thread = threading.Thread(target=publish)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive(), result  # blocked while the broker is down
        node.start()
        thread.join(30)
        assert not thread.is_alive() and "error" not in result, result
    taken = _take_all(settings, settings.job_queue("track"))
    assert [JobMessage.from_json(body).job_id for _, body in taken] == ["before", "during"]
    assert taken[1][0].message_id == result["id"]
