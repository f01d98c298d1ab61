"""What can go wrong between a service and the object store, as errors a service can act on.

A missing object (``ObjectNotFound``) means "do the work"; a checksum mismatch (``IntegrityError``)
means "do not trust this output"; an unreachable server (``StorageUnavailable``) means "retry the
job later"; refused credentials (``StorageAccessDenied``) mean "fix the configuration". None of the
messages contains a credential.
"""

from __future__ import annotations

from neuavatar.errors import NeuAvatarError

__all__ = [
    "StorageError",
    "ObjectNotFound",
    "IntegrityError",
    "StorageUnavailable",
    "StorageAccessDenied",
    "InvalidKeyError",
    "UnsafeArchiveError",
]


class StorageError(NeuAvatarError):
    """Base class of the object store's errors; also any S3 error without a class of its own."""


class ObjectNotFound(StorageError, LookupError):
    """The key (named in the message) does not exist in the bucket."""


class IntegrityError(StorageError):
    """An object's content does not match the SHA-256 in its metadata, or it carries none."""


class StorageUnavailable(StorageError, ConnectionError):
    """The S3 server could not be reached (or kept failing) after every retry."""


class StorageAccessDenied(StorageError):
    """The S3 server refused the credentials or the request (wrong keys, missing permission)."""


class InvalidKeyError(StorageError, ValueError):
    """An id or object key is empty, contains ``/`` or ``..``, or uses characters keys must not hold."""


class UnsafeArchiveError(StorageError, ValueError):
    """A directory archive holds a member that would land outside the target directory, or a link/device."""
