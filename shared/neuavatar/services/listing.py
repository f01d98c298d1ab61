"""Jobs and avatars listed a page at a time, newest first, without reading every record.

Beside each record (``jobs/{id}/job.json``, ``avatars/{id}/avatar.json``) the store holds an empty
index object whose key sorts newest first: ``index/{kind}/{newest}-{id}``, where ``newest`` is
:data:`_LATEST_MS` minus the record's creation time in milliseconds, 13 digits. S3 lists keys in
order and from a given key on (``start-after``), so a page costs one LIST of index keys and one
read per record on it. The page token is the name of the last index entry given out.

An entry is a hint, checked against its record when read: one whose record is gone (its job was
deleted while this was being written) or was made again at another time is skipped and removed.
Records written before the index existed get their entries from :meth:`ListingIndex.backfill`,
which the job API runs when it starts: it lists the record keys and reads only those without an
entry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from neuavatar.storage import ObjectNotFound, ObjectStore, StorageError, avatar_meta_key

__all__ = ["ListingIndex", "avatar_index", "avatar_meta", "put_avatar_meta", "record_id"]

log = logging.getLogger("neuavatar.services")

Kind = Literal["jobs", "avatars"]
_LATEST_MS = 9_999_999_999_999  # 2286-11-20: creation times count down from here
_NAME = re.compile(r"(\d{13})-([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_BATCH = 200  # index keys listed at a time when entries are skipped (a state filter, stale entries)
Record = dict[str, Any]


class ListingIndex:
    """The index of one kind of record.

    Args:
        kind: ``jobs`` or ``avatars`` (the record's id is ``job_id`` or ``avatar_id``).
        read: the record of an id, or None when there is none.
    """

    def __init__(self, store: ObjectStore, kind: Kind, read: Callable[[str], Record | None]) -> None:
        self.store, self.kind, self._read = store, kind, read
        self.prefix = f"index/{kind}/"
        self._id_field = {"jobs": "job_id", "avatars": "avatar_id"}[kind]

    def add(self, record: Record) -> None:
        """Index ``record`` (after it is stored)."""
        self.store.put_bytes(self._key(record), b"")

    def remove(self, record: Record) -> None:
        """Forget ``record`` (before it is deleted)."""
        self.store.delete(self._key(record))

    def page(self, token: str, size: int, keep: Callable[[Record], bool] = lambda record: True
             ) -> tuple[list[Record], str]:
        """Up to ``size`` records that ``keep`` accepts, newest first, after the entry ``token`` names;
        (the records, the next page's token: empty after the last).

        Reads the records on the page, plus those ``keep`` refuses on the way: with a filter that
        few records pass, a page may read many.

        Raises:
            ValueError: ``token`` is not one this index gave out.
        """
        if token and not _NAME.fullmatch(token):
            raise ValueError(f"page_token {token[:80]!r} is not one this server gave out")
        found: list[Record] = []
        after, last = (self.prefix + token if token else ""), token
        batch = min(size + 1, _BATCH)  # one more than the page: whether another page follows
        while True:
            keys = self.store.list_after(self.prefix, after, batch)
            for key in keys:
                if len(found) == size:
                    return found, last
                last = key[len(self.prefix):]
                record = self._checked(last)
                if record is not None and keep(record):
                    found.append(record)
            if len(keys) < batch:
                return found, ""
            after, batch = keys[-1], _BATCH

    def backfill(self, record_keys: list[str], id_of: Callable[[str], str | None]) -> int:
        """Index the records among ``record_keys`` that have no entry; how many were added."""
        indexed = {m[2] for key in self.store.list(self.prefix)
                   if (m := _NAME.fullmatch(key[len(self.prefix):]))}
        added = 0
        for key in record_keys:
            item_id = id_of(key)
            if item_id is None or item_id in indexed:
                continue
            record = self._read(item_id)
            if record is not None:
                self.add(record)
                added += 1
        if added:
            log.info("indexed %d %s that had no index entry", added, self.kind)
        return added

    def _key(self, record: Record) -> str:
        return f"{self.prefix}{_LATEST_MS - _created_ms(record):013d}-{record[self._id_field]}"

    def _checked(self, name: str) -> Record | None:
        """The record of the entry ``name``; None (and the entry removed) when it is stale."""
        match = _NAME.fullmatch(name)
        if match is None:
            return None
        try:
            record = self._read(match[2])
        except (StorageError, ValueError) as e:  # unreadable: leave it out of the page, keep its entry
            log.warning("listing %s: skipping %s: %s", self.kind, match[2], e)
            return None
        if record is not None and self._key(record) == self.prefix + name:
            return record
        self.store.delete(self.prefix + name)
        return None


def _created_ms(record: Record) -> int:
    """The record's ``created`` in milliseconds since the epoch (0 when it has none)."""
    try:
        created = datetime.fromisoformat(str(record.get("created", "")).replace("Z", "+00:00"))
    except ValueError:
        return 0
    return min(_LATEST_MS, max(0, round(created.timestamp() * 1000)))


def avatar_meta(store: ObjectStore, avatar_id: str) -> Record | None:
    """The ``avatar.json`` of ``avatar_id``, or None."""
    try:
        return store.get_json(avatar_meta_key(avatar_id))
    except ObjectNotFound:
        return None


def avatar_index(store: ObjectStore) -> ListingIndex:
    """The index of ``avatars/{id}/avatar.json``."""
    return ListingIndex(store, "avatars", lambda avatar_id: avatar_meta(store, avatar_id))


def put_avatar_meta(store: ObjectStore, meta: Record) -> None:
    """Store an avatar's ``avatar.json``, then its index entry (so that ListAvatars finds it)."""
    store.put_json(avatar_meta_key(meta["avatar_id"]), meta)
    avatar_index(store).add(meta)


def record_id(key: str, name: str) -> str | None:
    """The id in a record key ``{prefix}/{id}/{name}`` (e.g. ``jobs/{id}/job.json``), else None."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[2] == name else None

