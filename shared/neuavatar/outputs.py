"""Output directories that are either complete or absent.

Every stage writes into a hidden sibling directory and renames it into place when it is done, so
an interrupted or failed run leaves no half-written output. Each output carries an ``identity``
(its inputs' checksums and its resolved settings) in its metadata file: asking again for the same
output is a no-op, and an output directory holding something else is never silently replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from neuavatar.errors import OutputExistsError

__all__ = ["check_output", "staged_dir", "replace_dir", "tool_versions"]


def check_output(out: Path, *, identity: dict[str, Any], meta_file: str, kind: str,
                 overwrite: bool) -> Literal["new", "same"]:
    """Decide what to do with the output directory ``out`` before doing any work.

    Returns:
        ``"same"`` if ``out`` already holds this very output (same identity) and ``overwrite`` is
        False, else ``"new"``.

    Raises:
        OutputExistsError: ``out`` is a file; or holds a different ``kind`` and ``overwrite`` is
            False; or is a non-empty directory that is not a NeuAvatar output (never replaced).
    """
    out = Path(out)
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory; choose another output path")
    if not any(out.iterdir()):
        return "new"
    meta_path = out / meta_file
    if not meta_path.is_file():
        raise OutputExistsError(
            f"{out} is not empty and does not hold a NeuAvatar {kind}; refusing to replace it, choose another output path"
        )
    try:
        old = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        old = {}
    if overwrite:
        return "new"
    if old.get("identity") == identity:
        return "same"
    what = old.get("source", {}).get("path", "another input") if isinstance(old.get("source"), dict) else "another input"
    raise OutputExistsError(
        f"{out} already holds a different {kind} (made from {what} or with other settings); "
        "choose another output path or pass --overwrite to replace it"
    )


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh hidden directory beside ``out``; on success it replaces ``out``, on error it is removed."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)


def replace_dir(src: Path, out: Path) -> None:
    """Move the finished directory ``src`` to ``out``, replacing what is there (renames only: at
    every moment ``out`` is either the old or the new directory, never a mix)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(src, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (distribution names), plus Python's."""
    import platform

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
