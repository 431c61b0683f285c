"""Output paths checked before the work: every command that writes (``kit demo``, ``host-demo``,
``calibrate``, ``report``, ``run``, ``sweep``) calls one of these on its output before it
starts, so a path it cannot write is one line at once, not a traceback after minutes of work
(docs/cli-errors.md).

A missing folder on the way is created when the work is done, as ``mkdir -p`` would: here the
nearest folder that exists must be a folder this process can create files in (tried by creating
and removing an empty file: permission bits, read-only mounts and ACLs all answer).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["writable_file", "writable_folder"]


def _text(path, name: str) -> str:
    if isinstance(path, Path):
        path = str(path)
    if not isinstance(path, str):
        raise ValueError(f"{name}: expected a path, got {type(path).__name__} {path!r}")
    if not path.strip():
        raise ValueError(f"{name}: empty path")
    if "\0" in path:
        raise ValueError(f"{name}: a path cannot hold a NUL character, got {path!r}")
    return path


def _can_create_in(folder: Path, name: str, what: Path) -> None:
    """``folder`` (or its nearest existing ancestor) is a folder this process can write in."""
    here = folder
    while not here.exists():
        if here.is_symlink():
            raise ValueError(f"{name}: cannot create {what}: {here} is a dangling symbolic link")
        if here.parent == here:
            break
        here = here.parent
    if not here.is_dir():
        raise ValueError(f"{name}: cannot create {what}: {here} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=here, prefix=".kit-write-test-")
    except OSError as e:
        raise ValueError(f"{name}: cannot write in {here} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def writable_file(path, name: str, *, suffix: str | None = None) -> Path:
    """``path`` as a file this process can write (create or replace), or a ``ValueError``
    naming ``name``: empty, a folder, something other than a regular file, not ending in
    ``suffix``, or in a folder it cannot write in (or create)."""
    p = Path(_text(path, name))
    try:
        if suffix is not None and p.suffix != suffix:
            raise ValueError(f"{name}: expected a {suffix} path, got {str(path)!r}")
        if p.is_dir():
            raise ValueError(f"{name}: {p} is a folder; give the path of a file (in it, or elsewhere)")
        if p.exists() and not p.is_file():
            raise ValueError(f"{name}: {p} exists and is not a regular file")
        _can_create_in(p.parent, name, p)
    except OSError as e:                       # a name too long, a loop of links, ...
        raise ValueError(f"{name}: cannot use {str(path)!r} ({e.strerror or e})") from None
    return p


def writable_folder(path, name: str) -> Path:
    """``path`` as a folder this process can create files in (it may not exist yet), or a
    ``ValueError`` naming ``name``: empty, an existing file, or not writable."""
    p = Path(_text(path, name))
    try:
        if p.exists() and not p.is_dir():
            raise ValueError(f"{name}: {p} exists and is not a folder")
        _can_create_in(p, name, p)
    except OSError as e:
        raise ValueError(f"{name}: cannot use {str(path)!r} ({e.strerror or e})") from None
    return p
