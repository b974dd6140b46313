"""What every `maskedbert <command>` shares: a help formatter, argument checks, and the Ctrl-C note.

A command parses its flags, then checks them with the functions below *before* it writes anything or
loads anything heavy; each raises `maskedbert.errors.UsageError` with a message that names the flag,
what was given and what would work (`maskedbert.cli` prints it on one line and exits with status 2):

    parser = argparse.ArgumentParser(prog="maskedbert x", formatter_class=HelpFormatter)
    args = parser.parse_args(argv)
    spec = check_task(args.task)
    check_data_dir(spec, ["train", spec.dev_split], args.data_dir)
    check_model(args.model); check_out_dir(args.out); check_device(args.device)
    set_interrupt_note(lambda: f"finished {done} of {total} cells in {args.out}; rerun the command to resume")

This module imports nothing heavy at import time (no torch, transformers or datasets), so parsers can
use it and `--help` stays fast; check_device imports torch when it is called.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import re
import sys
from typing import Any, Callable, Iterable, Sequence

from maskedbert import _hub
from maskedbert._atomic import remove_stale_temporaries
from maskedbert._lock import folder_lock
from maskedbert.data.tasks import check_data_source, get_task, list_tasks
from maskedbert.errors import UsageError
from maskedbert.help_text import default_text
from maskedbert.models import OFFLINE_MINILM, TINY_MODELS, offline_minilm_path
from maskedbert.study_folder import claim_out_folder, delete_fresh, fresh_targets

__all__ = [
    "HelpFormatter", "explicit_args", "set_interrupt_note", "interrupt_note", "check_model", "check_task",
    "check_data_dir", "check_out_dir", "check_device", "check_number", "describe_default", "default_text",
]

_TINY_HINT = "offline-minilm or tiny-bert"


# ---- help ---------------------------------------------------------------------------------------------
def describe_default(value: Any) -> str:
    """A default as a user would type it: lists comma-joined, None as 'none'."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(describe_default(v) for v in value) or "(empty)"
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's help ends with its default (the one place a default is written: help texts never
    state it), options without a help text included; choices show in the metavar ({a,b,c}) or, when a
    metavar hides them, in the help. `default_text` overrides how a default reads.

    Flags that take no value (store_true, store_const, --help) show no default: off unless given.
    Descriptions and epilogs keep their line breaks (examples in them stay readable).
    """

    def _format_action(self, action: argparse.Action) -> str:
        extra = []
        if action.choices is not None and action.metavar is not None:
            extra.append("choices: " + ", ".join(map(str, action.choices)))
        takes_value = action.nargs != 0
        if action.option_strings and takes_value and action.default is not argparse.SUPPRESS:
            text = getattr(action, "default_text", None)
            extra.append("default: " + (text if text is not None else describe_default(action.default)))
        if extra and action.help is not argparse.SUPPRESS and "%(default)" not in (action.help or ""):
            action = copy.copy(action)
            addition = "(" + "; ".join(extra) + ")"
            action.help = f"{action.help or ''} {addition.replace('%', '%%')}".strip()
        return super()._format_action(action)


def explicit_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """dest -> value of the options given in `argv`, leaving out those that only hold their default.

    Lets a parser show real defaults in --help while flags given still override a --config file.
    """
    saved_defaults = [(action, action.default) for action in parser._actions]
    saved_parser_defaults = parser._defaults
    try:
        for action, _ in saved_defaults:
            action.default = argparse.SUPPRESS
        parser._defaults = {}
        namespace = parser.parse_args(list(argv))
    finally:
        for action, default in saved_defaults:
            action.default = default
        parser._defaults = saved_parser_defaults
    return vars(namespace)


# ---- Ctrl-C -------------------------------------------------------------------------------------------
_interrupt_note: str | Callable[[], str] | None = None


def set_interrupt_note(note: str | Callable[[], str] | None) -> None:
    """What `maskedbert` prints if Ctrl-C stops the command now: what finished, where, how to resume.

    A callable is evaluated at the moment of the interrupt (so it can count finished cells). Commands
    call this again as they progress; None clears it.
    """
    global _interrupt_note
    _interrupt_note = note


def interrupt_note() -> str | None:
    """The current note as text (None when none is set, or when the callable itself fails)."""
    note = _interrupt_note
    if callable(note):
        try:
            note = note()
        except Exception:  # a broken note must not hide the interrupt
            return None
    return note or None


# ---- argument checks ----------------------------------------------------------------------------------
# Hugging Face repo ids: "name" or "owner/name" with letters, digits, '-', '_', '.'
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _looks_like_path(name: str) -> bool:
    return not _HUB_ID.fullmatch(name) or ".." in name or name.startswith((".", "~"))


def check_model(name: str, flag: str = "--model") -> str:
    """A tiny model, offline-minilm (installed), a local model directory, or a hub name that can load.

    A hub name that is not in the local cache needs the hub: one quick connection check (no retries).
    """
    what_works = f"a local model directory (with config.json), a hub name such as bert-base-uncased, {_TINY_HINT}"
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{flag}: no model given; give {what_works}")
    if name in TINY_MODELS:
        return name
    if name == OFFLINE_MINILM:
        try:
            offline_minilm_path()
        except ImportError as exc:
            raise UsageError(f"{flag} {name}: {exc}") from None
        return name
    path = os.path.expanduser(name)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"{flag}: {name!r} is a file; give {what_works}")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UsageError(f"{flag}: {name!r} has no config.json, so it is not a model directory "
                             f"(save_pretrained writes one); give {what_works}")
        return name
    if _looks_like_path(name):
        raise UsageError(f"{flag}: no such directory {name!r}; give {what_works}")
    if _hub.cached_model_config(name):
        return name
    if _hub.offline_mode():
        raise UsageError(f"{flag}: {name!r} is not a local directory nor in the hub cache, and offline mode is "
                         f"set (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE); give a local model directory or {_TINY_HINT}")
    reason = _hub.hub_unreachable_reason()
    if reason:
        raise UsageError(f"{flag}: {name!r} is not a local directory and the hub is unreachable ({reason}); "
                         f"give a local model directory or {_TINY_HINT}")
    return name


def check_task(name: str, flag: str = "--task"):
    """The registered TaskSpec of `name`; an unknown name lists the tasks."""
    try:
        return get_task(name)
    except ValueError:
        raise UsageError(f"{flag}: unknown task {name!r}; choose one of: {', '.join(list_tasks())}") from None


def check_data_dir(spec, splits: Iterable[str], data_dir: str | None, flag: str = "--data-dir") -> None:
    """The task's data can be read: generated, files in `data_dir`, or the hub (quick offline check)."""
    check_data_source(spec, list(splits), data_dir, flag=flag)


def check_out_dir(path: str, flag: str = "--out") -> str:
    """A directory that exists (a run to resume) or can be created; creates nothing."""
    if not isinstance(path, str) or not path.strip():
        raise UsageError(f"{flag}: no directory given")
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(f"{flag}: {path!r} is an existing file; give a directory (a new one, or an earlier "
                         f"run's to resume it)")
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag}: cannot create {path!r}: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write in {existing!r} (permission denied); give another directory")
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    too_long = [part for part in target.split(os.sep) if len(os.fsencode(part)) > name_max]
    if too_long:
        raise UsageError(f"{flag}: the folder name {too_long[0][:40]!r}... is {len(os.fsencode(too_long[0]))} bytes; "
                         f"this file system allows {name_max}")
    if len(os.fsencode(target)) + 200 > path_max:  # room for the files a run writes inside
        raise UsageError(f"{flag}: the path is {len(os.fsencode(target))} bytes long; this file system allows "
                         f"{path_max} in all, and the run's files need about 200 more")
    return path


def add_out_arguments(parser: argparse.ArgumentParser) -> None:
    """--adopt-out and --wait: how a command treats an --out it does not own or another command holds."""
    parser.add_argument("--adopt-out", action="store_true",
                        help="use an --out that already holds other files (they are kept: --fresh never deletes "
                             "them); without it such a folder is refused")
    parser.add_argument("--wait", action="store_true",
                        help="when another maskedbert command is writing to --out, wait for it to finish "
                             "(else stop at once, saying which command holds it)")


@contextlib.contextmanager
def study_out(out: str, kind: str, *, owned: Sequence[str], fresh: bool = False, dry_run: bool = False,
              adopt: bool = False, wait: bool = False, prog: str = "maskedbert"):
    """The --out of a `kind` study, checked, marked and held (maskedbert.study_folder, maskedbert._lock).

    Before anything is written: a folder of another study kind, or holding files no such study wrote
    (unless `adopt`), is refused (UsageError). dry_run: nothing is deleted, locked or marked; `--fresh`
    only says what it would delete. Otherwise the folder is locked for the block (another command on it
    stops with one line, or waits with `wait`), marked as this study's, and `fresh` deletes the
    top-level entries in `owned` (names or glob patterns) that the study wrote, nothing else.
    """
    marker = claim_out_folder(out, kind, adopt=adopt, dry_run=True)  # refuses before anything is written
    if dry_run:
        if not marker.get("adopted"):  # a new or own folder: marked, so the files a dry run writes are the study's
            marker = claim_out_folder(out, kind, adopt=adopt)
        if fresh:
            targets = fresh_targets(out, marker, owned)
            print(f"dry run: --fresh would delete {len(targets)} entries of {out}"
                  + (": " + ", ".join(os.path.basename(t) for t in targets) if targets else ""), flush=True)
        yield marker
        return

    def waiting(holder: str) -> None:
        print(f"{prog}: {out} is in use by {holder}; waiting for it to finish", file=sys.stderr, flush=True)

    with folder_lock(out, wait=wait, on_wait=waiting, what="--out"):
        marker = claim_out_folder(out, kind, adopt=adopt)
        if fresh:
            delete_fresh(fresh_targets(out, marker, owned))
        remove_stale_temporaries(out, older_than_s=60.0)  # a `report` may be writing right now
        yield marker


def check_device(value: str | None, flag: str = "--device") -> str | None:
    """None/'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' on a machine that has it."""
    if value is None or value == "auto":
        return value
    import torch  # keeps --help torch-free

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{flag}: {value!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return value
    if device.type != "cuda":
        raise UsageError(f"{flag}: {value!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the driver)")
        raise UsageError(f"{flag}: {value!r} asked for, but {why} (torch {torch.__version__}); "
                         f"use --device cpu or auto")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UsageError(f"{flag}: {value!r} asked for, but this machine has {count} CUDA device(s): "
                         f"use cuda:0 to cuda:{count - 1}")
    return value


def check_number(flag: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 allow_none: bool = False) -> Any:
    """`value` is a number (an int when `integer`) within [low, high] (open ends where asked)."""
    if value is None and allow_none:
        return value
    kind = "an integer" if integer else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    wanted = kind + (" " + " and ".join(bounds) if bounds else "")
    number_types = (int,) if integer else (int, float)
    ok = isinstance(value, number_types) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok and not integer:
        ok = value == value and abs(value) != float("inf")
    if not ok:
        raise UsageError(f"{flag}: must be {wanted}, got {value!r}")
    return value
