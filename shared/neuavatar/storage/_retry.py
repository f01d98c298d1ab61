"""Retries with exponential backoff, and the translation of client errors into storage errors.

The S3 server may restart while a job runs (a redeploy, a crash). Each store operation is a
closure that can be run again from scratch; connection failures and 5xx answers are retried,
everything else (a missing key, refused credentials) is reported at once.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from neuavatar.storage.errors import (
    ObjectNotFound,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
)
from neuavatar.storage.settings import StorageSettings

__all__ = ["with_retries", "is_transient"]

log = logging.getLogger("neuavatar.storage")
T = TypeVar("T")

# S3 error codes that mean "the server is busy or starting", not "your request is wrong".
_TRANSIENT_CODES = frozenset({"ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout",
                              "XMinioServerNotInitialized"})
_DENIED_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthorizationHeaderMalformed",
                           "InvalidToken", "ExpiredToken", "AllAccessDisabled"})


def is_transient(error: BaseException) -> bool:
    """Whether trying the same request again may succeed: no connection, a dropped one, or a 5xx."""
    if isinstance(error, S3Error):
        return error.code in _TRANSIENT_CODES
    if isinstance(error, ServerError):
        return error.status_code >= 500
    if isinstance(error, InvalidResponseError):  # a non-S3 page, e.g. from a server that is still starting
        return True
    return isinstance(error, (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError))


def with_retries(settings: StorageSettings, what: str, operation: Callable[[], T], key: str | None = None) -> T:
    """Run ``operation`` until it succeeds, retrying transient failures with exponential backoff.

    Args:
        what: the operation, for messages ("get", "put", ...).
        key: the object key it works on, for messages.

    Raises:
        StorageUnavailable: still failing after ``settings.retry_attempts`` tries.
        ObjectNotFound: the key (or the bucket) does not exist.
        StorageAccessDenied: the server refused the credentials or the request.
        StorageError: any other S3 error.
    """
    delay = settings.retry_initial_delay_seconds
    target = f"{key!r} in bucket {settings.bucket!r}" if key else f"bucket {settings.bucket!r}"
    for attempt in range(1, settings.retry_attempts + 1):
        try:
            return operation()
        except StorageError:
            raise
        except Exception as error:  # classified below; anything not transient is translated or re-raised
            if not is_transient(error):
                raise _translate(error, settings, what, key, target) from error
            if attempt == settings.retry_attempts:
                raise StorageUnavailable(
                    f"object store at {settings.url} unavailable: {what} {target} failed {attempt} times, "
                    f"last with {_describe(error)}; is the S3 server running?") from error
            log.warning("storage %s %s failed (%s); retry %d/%d in %.2f s", what, target, _describe(error),
                        attempt, settings.retry_attempts - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, settings.retry_max_delay_seconds)
    raise AssertionError("unreachable")  # the loop returns or raises


def _translate(error: Exception, settings: StorageSettings, what: str, key: str | None, target: str) -> Exception:
    if not isinstance(error, S3Error):
        if isinstance(error, ServerError | InvalidResponseError):
            return StorageError(f"{what} {target} at {settings.url} failed: {error}")
        return error
    if error.code == "NoSuchKey" and key is not None:
        return ObjectNotFound(f"no object {key!r} in bucket {settings.bucket!r} at {settings.url}")
    if error.code == "NoSuchBucket":
        return ObjectNotFound(f"bucket {settings.bucket!r} does not exist at {settings.url} "
                              f"({what} {target}); create it with ObjectStore.ensure_bucket()")
    if error.code in _DENIED_CODES:
        return StorageAccessDenied(f"object store at {settings.url} refused {what} {target} ({error.code}): "
                                   "check the storage access key and secret key, and the key's permissions")
    return StorageError(f"{what} {target} at {settings.url} failed: {error.code}: {error.message}")


def _describe(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # urllib3's MaxRetryError wraps the socket error
    return f"{type(error).__name__}: {reason or error}"
