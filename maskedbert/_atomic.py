"""Atomic file writes: write beside the target, then os.replace, so readers and interrupted runs never
see a half-written file.

The temporary file is created with mode 0o666 filtered by the process umask, i.e. the mode a plain
`open(path, "w")` would give, so lab mates on a shared filesystem read results as they would any file.
Its data is flushed to disk before the rename, and the folder entry after it, so a crash leaves either
the old file or the new one.

A write that fails because the disk or quota is full, the file is too large or the folder is not
writable raises WriteError (an OSError) naming the file that was to be written, not its temporary;
`maskedbert.cli` reports it in one line. A temporary left by a killed process (`.<name>.<8 hex>.<ext>`)
is removed by `remove_stale_temporaries` when the next run starts in that folder.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time

# the errors a user fixes by freeing space or fixing permissions (not bugs in maskedbert)
WRITE_ERRNOS = frozenset(code for code in (errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EPERM,
                                           getattr(errno, "EDQUOT", None), errno.ENAMETOOLONG) if code is not None)
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.[A-Za-z0-9]{1,16}$")


class WriteError(OSError):
    """Writing `filename` failed for a reason outside maskedbert (disk full, quota, permissions)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


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
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = _create_temporary(folder, os.path.basename(path), suffix)
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(folder, directory=True)
    except Exception as exc:
        cause = _write_error_in(exc)
        if cause is None and tmp is not None and isinstance(exc, RuntimeError) and _disk_is_full(folder):
            cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # torch.save to a path hides the errno
        if cause is not None and not isinstance(exc, WriteError):
            raise WriteError(cause.errno, os.strerror(cause.errno), path) from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_error_in(exc: BaseException | None) -> OSError | None:
    """The disk/permission OSError behind `exc` (writers such as torch.save wrap it in a RuntimeError)."""
    seen = 0
    while exc is not None and seen < 10:
        if is_write_error(exc):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _disk_is_full(folder: str) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail == 0


def remove_stale_temporaries(folder: str | os.PathLike, *, older_than_s: float = 0.0) -> list[str]:
    """Delete temporaries that atomic_path left in `folder` (not below it) when its process was killed.

    Only call this where no other process is writing (the folder's one writer, at start). Returns the
    removed paths. `older_than_s` spares temporaries younger than that (a concurrent reader's writes).
    """
    folder = os.fspath(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not _TEMPORARY.match(name):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and now - os.path.getmtime(path) >= older_than_s:
                os.unlink(path)
                removed.append(path)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def set_aside(path: str) -> str:
    """Rename an unreadable file to `<path>.unreadable-<time>` (kept for a post-mortem); returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = f"{path}.unreadable-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.unreadable-{stamp}-{n}"
    os.replace(path, target)
    return target
