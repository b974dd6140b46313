"""Exclusive locks on folders, so one study (or one cell of it) has one writer at a time.

`folder_lock(folder)` holds `flock(LOCK_EX)` on `<folder>/.lock` for the duration of a `with` block.
The kernel (or the network file system's lock manager: NFSv4, Lustre mounted with `-o flock`, GPFS)
releases it when the holder exits for any reason, kill -9 included, so a lock is never stale. It
belongs to the open file, not to a pid written somewhere: a copied folder carries no lock. The file
also holds who took it (host, pid, command, time), read only to word the message of the one who waits.

`is_locked(folder)` asks, without waiting, whether someone holds the lock: the sweep tells a cell that
is running from one whose worker was killed, wherever the worker ran. On a file system without locks
it answers None (unknown) and callers fall back to other evidence.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time

from maskedbert.errors import UsageError

__all__ = ["LOCK_NAME", "FolderBusyError", "folder_lock", "is_locked", "lock_holder"]

LOCK_NAME = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class FolderBusyError(UsageError):
    """Another process holds the folder's lock."""


def _fcntl():
    try:
        import fcntl  # optional dependency: POSIX only (Windows has no flock; studies there are single-user)
    except ImportError:
        return None
    return fcntl


def lock_holder(folder: str | os.PathLike) -> str:
    """Who took the lock last, in words ("pid 12 on node3, `maskedbert srnet ...`, since 2026-12-03 18:02:11")."""
    try:
        with open(os.path.join(os.fspath(folder), LOCK_NAME), encoding="utf-8") as f:
            info = json.loads(f.read() or "{}")
        parts = [f"pid {info['pid']} on {info['host']}"]
        if info.get("command"):
            parts.append(f"`{info['command']}`")
        parts.append(f"since {info['since']}")
        return ", ".join(parts)
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (unknown which)"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, wait: bool = False, what: str = "--out",
                command: str | None = None, on_wait=None):
    """Hold `<folder>/.lock` exclusively. Busy: FolderBusyError naming the holder, or with wait=True
    call `on_wait(holder)` once and block until it is free."""
    folder = os.fspath(folder)
    fcntl = _fcntl()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(folder)
                if not wait:
                    raise FolderBusyError(f"{what}: {folder!r} is in use by {holder}; wait for it to finish "
                                          f"(or pass --wait), or use another {what}") from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                # a file system without locks: proceed unlocked rather than refuse to run at all
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": command if command is not None else " ".join(["maskedbert", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def is_locked(folder: str | os.PathLike) -> bool | None:
    """True when some process holds `<folder>/.lock`, False when none does (or there is no lock file),
    None when this file system cannot tell."""
    fcntl = _fcntl()
    path = os.path.join(os.fspath(folder), LOCK_NAME)
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
