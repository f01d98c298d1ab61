"""The object store every service reads its inputs from and writes its outputs to.

Every object carries the SHA-256 of its content in user metadata (``x-amz-meta-sha256``), and every
read verifies it: a stage's output that exists with a valid checksum is done, so a redelivered
job can skip the work (docs/services.md). Downloads go to a temporary name beside the target and
are renamed into place only once verified, so a crash or a mismatch never leaves a half-written
or corrupt file where a reader would take it for the real one.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from neuavatar.storage._retry import with_retries
from neuavatar.storage.archive import pack_dir, unpack_dir
from neuavatar.storage.errors import IntegrityError, StorageError
from neuavatar.storage.keys import validate_key
from neuavatar.storage.settings import MIN_PART_SIZE_BYTES, StorageSettings

__all__ = ["ObjectInfo", "ObjectStore", "SHA256_METADATA"]

SHA256_METADATA = "sha256"
"""User-metadata name of the checksum; on the wire the header ``x-amz-meta-sha256``."""
_SHA256_HEADER = f"x-amz-meta-{SHA256_METADATA}"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object (from a HEAD, or returned by a put)."""

    key: str
    size_bytes: int
    sha256: str | None
    """Hex SHA-256 from the object's metadata; None when it carries none."""
    etag: str
    """The server's ETag; a multipart object's ends in ``-{parts}``."""
    last_modified: datetime | None = None
    content_type: str | None = None

    @property
    def parts(self) -> int:
        """Number of multipart parts (1 for an object that went up in one PUT)."""
        _, dash, count = self.etag.rpartition("-")
        return int(count) if dash and count.isdigit() else 1


class ObjectStore:
    """A bucket on an S3 server (MinIO, SeaweedFS, AWS), with checksummed puts and verified gets.

    Args:
        settings: endpoint, credentials, bucket and transfer tuning.
        client: a ready ``minio.Minio`` to use instead of one built from ``settings`` (tests).

    Every method raises :class:`~neuavatar.storage.StorageUnavailable` when the server stays
    unreachable through all retries, and :class:`~neuavatar.storage.StorageAccessDenied` when it
    refuses the credentials.
    """

    def __init__(self, settings: StorageSettings | None = None, *, client: Minio | None = None) -> None:
        self._settings = settings or StorageSettings()
        self._client = client or _make_client(self._settings)

    def __repr__(self) -> str:
        return f"ObjectStore({self._settings.url}, bucket={self._settings.bucket!r})"

    @property
    def settings(self) -> StorageSettings:
        return self._settings

    @property
    def client(self) -> Minio:
        """The underlying ``minio.Minio`` client, for what this class does not cover."""
        return self._client

    @property
    def bucket(self) -> str:
        return self._settings.bucket

    # -- bucket ------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe to call from every service at start-up)."""
        def operation() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as error:  # another service created it in between
                if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._retry("ensure bucket", operation)

    # -- writes ------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing any object there) with its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        return self._put(key, lambda: io.BytesIO(data), len(data), digest, content_type)

    def put_json(self, key: str, value: Any) -> ObjectInfo:
        """Store ``value`` as UTF-8 JSON (``application/json``).

        Raises:
            ValueError: ``value`` is not JSON-serialisable.
        """
        try:
            text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
        except (TypeError, ValueError) as error:
            raise ValueError(f"cannot store {key!r} as JSON: {error}") from error
        return self.put_bytes(key, text.encode("utf-8"), content_type="application/json")

    def put_file(self, key: str, path: str | os.PathLike, *,
                 content_type: str = "application/octet-stream") -> ObjectInfo:
        """Store the file at ``path`` under ``key``; above the multipart threshold in parts.

        The file is read twice (checksum first: S3 takes metadata before the content) and must not
        change meanwhile.

        Raises:
            FileNotFoundError: ``path`` does not exist.
        """
        path = Path(path)
        size = path.stat().st_size
        digest = _sha256_file(path)
        return self._put(key, lambda: open(path, "rb"), size, digest, content_type)

    def put_dir(self, key: str, directory: str | os.PathLike, *, scratch: str | os.PathLike | None = None) -> ObjectInfo:
        """Store the tree under ``directory`` as one tar object (see :func:`~neuavatar.storage.pack_dir`).

        Args:
            scratch: where the tar is made (default: the system's temporary folder).
        """
        validate_key(key)
        with tempfile.TemporaryDirectory(prefix="neuavatar-tar-", dir=scratch) as tmp:
            tar = pack_dir(directory, Path(tmp) / "dir.tar")
            return self.put_file(key, tar, content_type="application/x-tar")

    def _put(self, key: str, open_stream: Callable[[], IO[bytes]], size: int, digest: str,
             content_type: str) -> ObjectInfo:
        validate_key(key)
        s = self._settings
        # Below the threshold one PUT (a part as large as the object); above it parts of part_size.
        part_size = max(size, MIN_PART_SIZE_BYTES) if size <= s.multipart_threshold_bytes else s.part_size_bytes

        def operation() -> ObjectInfo:
            with open_stream() as stream:
                result = self._client.put_object(self.bucket, key, stream, size, content_type=content_type,
                                                 metadata={SHA256_METADATA: digest}, part_size=part_size)
            return ObjectInfo(key=key, size_bytes=size, sha256=digest, etag=(result.etag or "").strip('"'),
                              last_modified=result.last_modified, content_type=content_type)
        return self._retry("put", operation, key)

    # -- reads -------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        """The verified content of ``key``.

        Raises:
            ObjectNotFound: no object ``key``.
            IntegrityError: its content does not match its SHA-256, or it carries none.
        """
        validate_key(key)

        def operation() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                expected = response.headers.get(_SHA256_HEADER)
                data = response.read()
            finally:
                response.close()
                response.release_conn()
            _verify(key, expected, hashlib.sha256(data).hexdigest())
            return data
        return self._retry("get", operation, key)

    def get_json(self, key: str) -> Any:
        """The verified JSON value stored under ``key``.

        Raises:
            ObjectNotFound, IntegrityError: as :meth:`get_bytes`.
            StorageError: the content is not UTF-8 JSON.
        """
        data = self.get_bytes(key)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StorageError(f"object {key!r} in bucket {self.bucket!r} is not JSON: {error}") from error

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        """Download ``key`` to ``path`` (replacing it) and return ``path``.

        The content goes to a temporary file beside ``path``, is verified against its SHA-256, and
        only then renamed onto ``path``: on any failure ``path`` is untouched and no temporary file
        remains.

        Raises:
            ObjectNotFound: no object ``key``.
            IntegrityError: its content does not match its SHA-256, or it carries none.
        """
        validate_key(key)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)

        def operation() -> Path:
            partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
            try:
                response = self._client.get_object(self.bucket, key)
                try:
                    expected = response.headers.get(_SHA256_HEADER)
                    sha = hashlib.sha256()
                    with open(partial, "wb") as out:
                        for chunk in response.stream(_CHUNK):
                            sha.update(chunk)
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                finally:
                    response.close()
                    response.release_conn()
                _verify(key, expected, sha.hexdigest())
                os.replace(partial, target)
                return target
            finally:
                partial.unlink(missing_ok=True)
        return self._retry("get", operation, key)

    def get_dir(self, key: str, directory: str | os.PathLike) -> Path:
        """Download the tar object ``key`` and extract it into ``directory`` (absent or empty).

        Raises:
            ObjectNotFound, IntegrityError: as :meth:`get_file`.
            UnsafeArchiveError: a member is absolute, has ``..`` or is a link (nothing is extracted).
            OutputExistsError: ``directory`` exists and is not empty.
        """
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
            tar = self.get_file(key, Path(tmp) / "dir.tar")
            return unpack_dir(tar, target)

    # -- metadata ----------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        """Size, checksum and ETag of ``key``.

        Raises:
            ObjectNotFound: no object ``key``.
        """
        validate_key(key)

        def operation() -> ObjectInfo:
            o = self._client.stat_object(self.bucket, key)
            sha = o.metadata.get(_SHA256_HEADER) if o.metadata is not None else None
            return ObjectInfo(key=key, size_bytes=o.size or 0, sha256=sha, etag=(o.etag or "").strip('"'),
                              last_modified=o.last_modified, content_type=o.content_type)
        return self._retry("stat", operation, key)

    def exists(self, key: str) -> bool:
        """Whether an object ``key`` exists (without checking its content)."""
        validate_key(key)

        def operation() -> bool:
            try:
                self._client.stat_object(self.bucket, key)
            except S3Error as error:
                if error.code == "NoSuchKey":
                    return False
                raise
            return True
        return self._retry("stat", operation, key)

    def list(self, prefix: str = "") -> list[str]:
        """The keys that start with ``prefix``, at any depth, sorted."""
        def operation() -> list[str]:
            objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            return sorted(o.object_name for o in objects if o.object_name and not o.is_dir)
        return self._retry("list", operation, prefix or None)

    def list_after(self, prefix: str, start_after: str = "", limit: int = 1000) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` that sort after ``start_after`` (UTF-8 byte order, as S3
        lists them): one page of a listing, without listing the rest.

        Raises:
            ValueError: ``limit`` is not positive.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")

        def operation() -> list[str]:
            objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True,
                                                start_after=start_after or None)
            return [o.object_name for o in itertools.islice((o for o in objects if o.object_name and not o.is_dir),
                                                            limit)]
        return self._retry("list", operation, prefix or None)

    # -- deletes -----------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a key that does not exist is not an error."""
        validate_key(key)
        self._retry("delete", lambda: self._client.remove_object(self.bucket, key), key)

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix``; how many there were.

        Raises:
            ValueError: ``prefix`` is empty (that would empty the whole bucket).
        """
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix; refusing to empty the whole bucket")
        keys = self.list(prefix)
        if not keys:
            return 0

        def operation() -> None:
            errors = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
            if errors:
                raise StorageError(f"could not delete {len(errors)} of {len(keys)} objects under {prefix!r}: "
                                   f"{errors[0].name}: {errors[0].code} {errors[0].message}")
        self._retry("delete", operation, prefix)
        return len(keys)

    def _retry(self, what: str, operation: Callable[[], Any], key: str | None = None) -> Any:
        return with_retries(self._settings, what, operation, key)


def _make_client(settings: StorageSettings) -> Minio:
    # urllib3 retries nothing itself: with_retries owns retrying, so its backoff and attempt count
    # are the only ones, and a dead server is reported after a predictable time.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds),
        maxsize=10, retries=urllib3.Retry(total=0, redirect=False),  # redirects go back to minio, which handles them
        cert_reqs="CERT_REQUIRED")  # https: the system's trusted CAs
    return Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key,
                 secure=settings.secure, region=settings.region, http_client=http)


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _verify(key: str, expected: str | None, actual: str) -> None:
    if not expected:
        raise IntegrityError(f"object {key!r} carries no SHA-256 in its metadata ({_SHA256_HEADER}); "
                             "refusing to trust it")
    if expected.strip().lower() != actual:
        raise IntegrityError(f"object {key!r} is corrupt: its content hashes to SHA-256 {actual}, "
                             f"its metadata says {expected}")
