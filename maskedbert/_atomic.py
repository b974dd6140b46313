"""Atomic file writes: write beside the target, then os.replace, so readers and interrupted runs never
see a half-written file.

The temporary file is created with mode 0o666 filtered by the process umask, i.e. the mode a plain
`open(path, "w")` would give, so lab mates on a shared filesystem read results as they would any file.
Its data is flushed to disk before the rename, and the folder entry after it, so a crash leaves either
the old file or the new one.
"""
from __future__ import annotations

import contextlib
import os
import secrets


def _create_temporary(folder: str, name: str, suffix: str) -> str:
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}{suffix}")
        try:
            # 0o666 & ~umask, as open() would: mkstemp's 0o600 would hide results from the group
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {os.path.join(folder, name)}")


def _fsync_path(path: str, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return  # a folder that cannot be opened for reading (some platforms): the rename still holds
    try:
        os.fsync(fd)
    except OSError:
        pass  # filesystems without fsync on folders
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path in the target's folder; on success it replaces `path`, on error it is removed.

    `suffix` lets writers that infer the format from the name (matplotlib, for one) see the right one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _create_temporary(folder, os.path.basename(path), suffix)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(folder, directory=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
