"""Whose folder is `--out`? A study marks its folder so that it never takes, or deletes, a user's files.

    <out>/maskedbert_study.json   {"format": "maskedbert-study", "kind": "srnet", "created": ..., "adopted": [...]}

The marker is the first file a study writes. A command then treats `--out` as follows:
- missing or empty: a new study; the marker is written (unless --dry-run);
- marked as a study of this kind: its own; of another kind: refused (exit 2);
- not marked but holding files: refused (exit 2), unless the user adopts it (`--adopt-out`); the
  names already there are recorded in the marker as "adopted" and are never deleted;
- a marker that cannot be read: "unknown" to `status`; a command refuses it (exit 2) unless adopted.
`--fresh` deletes only the top-level entries of the folder that the study writes (`owned` names or
glob patterns, given by the command) and that were not there when the folder was adopted.
An unmarked folder holding a sweep.json of the same kind (written by a maskedbert without markers) is its own.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from collections.abc import Iterable

from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError

__all__ = ["MARKER_NAME", "UNREADABLE", "read_marker", "claim_out_folder", "fresh_targets", "delete_fresh"]

MARKER_NAME = "maskedbert_study.json"
_FORMAT = "maskedbert-study"
UNREADABLE = "unreadable"
_IGNORED = {".lock"}  # written by the folder lock before anything else
# The marker's temporary (maskedbert._atomic) exists for an instant while another command, holding the
# lock, marks a new folder; a command checking the folder before it takes the lock must not read it as
# a user's file.
_MARKER_TEMPORARY = f".{MARKER_NAME}.*"


def read_marker(folder: str | os.PathLike) -> dict | str | None:
    """The marker's content, None when there is none, or UNREADABLE (empty, torn, not ours)."""
    path = os.path.join(os.fspath(folder), MARKER_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return UNREADABLE
    if not isinstance(marker, dict) or marker.get("format") != _FORMAT or not isinstance(marker.get("kind"), str):
        return UNREADABLE
    return marker


def _legacy_kind(folder: str) -> str | None:
    """The kind in an unmarked folder's sweep.json (maskedbert versions without markers), if readable."""
    try:
        with open(os.path.join(folder, "sweep.json"), encoding="utf-8") as f:
            record = json.load(f)
        return record["kind"] if isinstance(record, dict) and isinstance(record.get("kind"), str) else None
    except (OSError, ValueError, KeyError):
        return None


def _entries(folder: str) -> list[str]:
    try:
        return sorted(name for name in os.listdir(folder)
                      if name not in _IGNORED and not fnmatch.fnmatchcase(name, _MARKER_TEMPORARY))
    except FileNotFoundError:
        return []


def claim_out_folder(folder: str | os.PathLike, kind: str, *, adopt: bool = False, dry_run: bool = False,
                     flag: str = "--out") -> dict:
    """Check that `folder` may hold a `kind` study and mark it (not with dry_run); returns the marker.

    Raises UsageError, before writing anything, for a folder of another study kind, or one holding
    files that no study of this kind wrote (unless adopt).
    """
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{flag}: {folder!r} is a file, expected a folder")
    marker = read_marker(folder)
    if isinstance(marker, dict):
        if marker["kind"] != kind:
            raise UsageError(f"{flag}: {folder!r} holds a {marker['kind']} study, not a {kind} one; use another {flag}")
        return marker
    entries = _entries(folder)
    legacy = _legacy_kind(folder) if marker is None else None
    if legacy is not None and legacy != kind:
        raise UsageError(f"{flag}: {folder!r} holds a {legacy} study, not a {kind} one; use another {flag}")
    adopted: list[str] = []
    if entries and legacy is None:
        if not adopt:
            what = (f"its {MARKER_NAME} is unreadable" if marker == UNREADABLE
                    else f"it holds {len(entries)} entries ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''}) "
                         f"and no maskedbert study")
            raise UsageError(f"{flag}: {folder!r} is not empty and not a {kind} study ({what}); use an empty or new "
                             f"{flag}, or pass --adopt-out to keep those files and add the study beside them")
        adopted = [name for name in entries if name != MARKER_NAME]
    marker = {"format": _FORMAT, "kind": kind, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "adopted": adopted}
    if not dry_run:
        write_text_atomic(os.path.join(folder, MARKER_NAME), json.dumps(marker, indent=2) + "\n")
    return marker


def fresh_targets(folder: str | os.PathLike, marker: dict, owned: Iterable[str]) -> list[str]:
    """Top-level paths `--fresh` deletes: entries matching `owned` (names or glob patterns) that the
    folder did not hold when it was adopted. Never the marker, the lock, or anything else."""
    folder = os.fspath(folder)
    patterns = list(owned)
    adopted = set(marker.get("adopted") or ())
    return [os.path.join(folder, name) for name in _entries(folder)
            if name != MARKER_NAME and name not in adopted and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def delete_fresh(paths: Iterable[str]) -> None:
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
