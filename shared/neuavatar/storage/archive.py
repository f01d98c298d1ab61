"""A directory as one uncompressed tar, and its safe extraction.

Stage outputs (datasets, tracking, avatars) are directories of many small files; storing each as
one object keeps them atomic (a reader sees the whole directory or nothing) and checksummed once.
Archives come back from a shared store, so extraction trusts no member: every name is checked
before anything is written, and only regular files and directories are accepted.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath

from neuavatar.errors import InputError, OutputExistsError
from neuavatar.storage.errors import UnsafeArchiveError

__all__ = ["pack_dir", "unpack_dir"]

_CHUNK = 1024 * 1024


def pack_dir(directory: str | os.PathLike, tar_path: str | os.PathLike) -> Path:
    """Write the tree under ``directory`` to ``tar_path`` (member names relative to it, sorted, no owners).

    Symbolic links to files are stored as the files they point to.

    Raises:
        InputError: ``directory`` is not a directory, or holds a link to a directory.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"cannot archive {root}: not a directory")
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
        for current, dirs, files in os.walk(root):
            dirs.sort()
            here = Path(current)
            for d in dirs:
                if (here / d).is_symlink():
                    raise InputError(f"cannot archive {root}: {here / d} is a link to a directory")
                tar.add(here / d, arcname=(here / d).relative_to(root).as_posix(), recursive=False,
                        filter=_anonymous)
            for f in sorted(files):
                tar.add(here / f, arcname=(here / f).relative_to(root).as_posix(), recursive=False,
                        filter=_anonymous)
    return Path(tar_path)


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def unpack_dir(tar_path: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Extract ``tar_path`` into ``directory``, which must not exist or be empty.

    Members are extracted into a temporary directory beside ``directory`` that is renamed into
    place at the end, so a failure leaves no half-extracted tree behind.

    Raises:
        UnsafeArchiveError: a member is absolute, has a ``..`` segment, or is not a file or directory
            (nothing is written).
        OutputExistsError: ``directory`` exists and is not empty.
    """
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OutputExistsError(f"cannot extract into {target}: it exists and is not an empty directory")
    with tarfile.open(tar_path, "r:") as tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m, tar_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
        try:
            staging.mkdir()
            for m in members:
                out = staging.joinpath(*PurePosixPath(m.name).parts)
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(m)
                assert source is not None  # regular files always have content
                with source, open(out, "wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
                os.chmod(out, 0o644 | (m.mode & 0o111))
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_member(member: tarfile.TarInfo, tar_path: str | os.PathLike) -> None:
    name = member.name
    path = PurePosixPath(name)
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name:
        raise UnsafeArchiveError(f"archive {tar_path} holds an unsafe member name {name!r} "
                                 "(absolute, '..' or backslash); refusing to extract it")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive {tar_path} holds {name!r}, which is a link or special file; "
                                 "only regular files and directories are extracted")
