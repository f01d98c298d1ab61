"""The object store of the services: checksummed S3 objects under the key layout of docs/services.md.

``ObjectStore(StorageSettings(...))`` wraps the ``minio`` client: every put stores the content's
SHA-256 in user metadata, every get verifies it, downloads land atomically, directories travel as
one tar, and connection failures are retried with exponential backoff so that a restart of the S3
server does not fail a job. ``keys`` builds the documented keys from validated ids.
"""

from neuavatar.storage import keys
from neuavatar.storage.archive import pack_dir, unpack_dir
from neuavatar.storage.errors import (
    IntegrityError,
    InvalidKeyError,
    ObjectNotFound,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
    UnsafeArchiveError,
)
from neuavatar.storage.keys import (
    avatar_key,
    avatar_meta_key,
    dataset_key,
    job_key,
    resume_key,
    tracking_key,
    upload_key,
    validate_id,
    validate_key,
)
from neuavatar.storage.settings import StorageSettings
from neuavatar.storage.store import SHA256_METADATA, ObjectInfo, ObjectStore

__all__ = [
    "StorageSettings",
    "ObjectStore",
    "ObjectInfo",
    "SHA256_METADATA",
    "StorageError",
    "ObjectNotFound",
    "IntegrityError",
    "StorageUnavailable",
    "StorageAccessDenied",
    "InvalidKeyError",
    "UnsafeArchiveError",
    "keys",
    "validate_id",
    "validate_key",
    "upload_key",
    "job_key",
    "dataset_key",
    "tracking_key",
    "resume_key",
    "avatar_key",
    "avatar_meta_key",
    "pack_dir",
    "unpack_dir",
]
