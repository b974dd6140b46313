"""A study on disk: its settings, its cells and each cell's state, readable from any process or machine.

    <study dir>/sweep.json               kind, runner, reporter, settings (compared on relaunch), info, cells
    <study dir>/<cell id>/               the cell's own directory (the runner writes what it likes there)
        sweep_running.json               host, pid, SLURM job id and log of the attempt now (or last) running
        sweep_failures.json              one record per failed attempt: error line, traceback tail, log path
        sweep_done.json                  {"result": ...}: written last (atomically), so it marks a finished cell
        sweep_submitted.json             SLURM job id and log path, written at submission
        sweep_progress.json              checkpoints the cell's training saved: count, last step, path
        sweep_attempts.json              one record per attempt: when, where, checkpoints saved before it
        .lock                            flock held by the process running the cell (maskedbert._lock)

A cell is done when sweep_done.json exists; it is never rerun. A cell whose attempts failed
MAX_FAILURES times is `failed` and no launcher retries it (`forget_failures` clears the record). A
cell whose attempt died without a trace (killed, preempted, out of time) goes back to pending; its
runner resumes from whatever checkpoint it left. A cell whose last NO_PROGRESS_ATTEMPTS attempts
were stopped without saving a single checkpoint is failed for good, with that reason (a time limit
shorter than the time to the first checkpoint would otherwise resubmit it forever).

Whether a cell is running is asked of its lock (held while an attempt runs, released by the kernel
when the process ends, and not carried by a copy of the folder); a recorded pid is only consulted on
file systems without locks. A record file that cannot be read (empty, torn) never crashes a reader:
an unreadable sweep_done.json makes the cell "unknown" (the next launch sets it aside and runs the
cell again), an unreadable sweep_running.json reads as an interrupted attempt.

The runner and reporter are recorded by name and looked up through a `StudyKinds` that the caller
hands in (the experiments layer holds the registry), so this package imports no experiment and
never imports a module named in sweep.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import sys
import time
import traceback
from typing import Any, Callable

from maskedbert._atomic import remove_stale_temporaries, set_aside, write_text_atomic
from maskedbert._lock import FolderBusyError, folder_lock, is_locked
from maskedbert.errors import UsageError
from maskedbert.log import status as log_status

__all__ = ["Cell", "Study", "CellState", "StudyKinds", "prepare_study", "load_study", "execute_cell",
           "MAX_FAILURES", "STUDY_FILE"]

STUDY_FILE = "sweep.json"
DONE, RUNNING, FAILURES, SUBMITTED = "sweep_done.json", "sweep_running.json", "sweep_failures.json", "sweep_submitted.json"
PROGRESS, ATTEMPTS = "sweep_progress.json", "sweep_attempts.json"
MAX_FAILURES = 2  # a cell that failed this often is reported, not retried
NO_PROGRESS_ATTEMPTS = 3  # interrupted attempts in a row without a new checkpoint: failed for good
UNREADABLE = "unreadable"  # what _read_json gives for a file that exists but is not JSON
_ID_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a study. `id` is stable across launches and names the cell's directory (parts joined
    by "/" become nested folders); `spec` is the JSON the runner gets; `needs` lists ids of cells that
    must be done first (e.g. the shared fine-tuned model a pruning cell starts from)."""
    id: str
    spec: dict
    needs: tuple[str, ...] = ()


@dataclasses.dataclass
class CellState:
    status: str                       # done | running | failed | pending | unknown
    detail: str = ""                  # why, in words: "interrupted ...", "queued as SLURM job 12_3", ...
    result: Any = None
    failures: list = dataclasses.field(default_factory=list)
    log: str | None = None


def _read_json(path: str) -> Any:
    """The file's JSON, None when there is no file, UNREADABLE when it is empty, torn or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return UNREADABLE


def _read_record(path: str) -> dict | None | str:
    """A JSON object record: the dict, None, or UNREADABLE (also for JSON that is not an object)."""
    value = _read_json(path)
    return value if value is None or isinstance(value, dict) else UNREADABLE


def _write_json(path: str, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def _normalized(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclasses.dataclass(frozen=True)
class StudyKinds:
    """What the runner and reporter names recorded in sweep.json mean, from a fixed registry.

    `runner(name)` -> runner(spec, cell_dir, progress=...) -> JSON result; `reporter(name)` ->
    reporter(study) -> {artifact: path}; both raise UsageError for a name they do not know.
    `worker_module` is started by the local launcher as `python -m <worker_module> STUDY_DIR CELL_ID
    --log PATH` and runs `maskedbert.sweep.worker.main` with these kinds. Module-level functions keep
    it picklable for SLURM jobs.
    """
    runner: Callable[[str], Callable]
    reporter: Callable[[str], Callable]
    worker_module: str


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        changed = []
        for key in keys:
            if old.get(key, "<missing>") != new.get(key, "<missing>"):
                sub = _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.") if prefix.count(".") < 1 else []
                changed += sub or [f"{prefix}{key}"]
        return changed
    return [] if old == new else [prefix.rstrip(".")]


class Study:
    """A study directory, read back from its sweep.json."""

    def __init__(self, directory: str, record: dict):
        self.dir = os.path.abspath(directory)
        self.kind: str = record["kind"]
        self.runner: str = record["runner"]
        self.reporter: str | None = record.get("reporter")
        self.settings: dict = record["settings"]
        self.info: dict = record.get("info", {})
        self.cells: dict[str, Cell] = {c["id"]: Cell(c["id"], c["spec"], tuple(c.get("needs", ())))
                                       for c in record["cells"]}

    def cell_dir(self, cell_id: str) -> str:
        return os.path.join(self.dir, *cell_id.split("/"))

    def _file(self, cell_id: str, name: str) -> str:
        return os.path.join(self.cell_dir(cell_id), name)

    def _done(self, cell_id: str) -> dict | None | str:
        done = _read_record(self._file(cell_id, DONE))
        return UNREADABLE if isinstance(done, dict) and "result" not in done else done

    def result(self, cell_id: str) -> Any:
        done = self._done(cell_id)
        return done["result"] if isinstance(done, dict) else None

    def is_done(self, cell_id: str) -> bool:
        return isinstance(self._done(cell_id), dict)

    def failures(self, cell_id: str) -> list[dict]:
        failures = _read_json(self._file(cell_id, FAILURES))
        if not isinstance(failures, list):
            return []  # none, or an unreadable record: the cell gets another attempt
        return [f if isinstance(f, dict) else {"error": str(f)} for f in failures]

    def failed_for_good(self, cell_id: str) -> bool:
        failures = self.failures(cell_id)
        return len(failures) >= MAX_FAILURES or any(f.get("final") for f in failures)

    def progress(self, cell_id: str) -> dict:
        """{"saves": checkpoints saved so far, "step", "total", "checkpoint": path} ({} before the first)."""
        progress = _read_record(self._file(cell_id, PROGRESS))
        return progress if isinstance(progress, dict) else {}

    def resume_point(self, cell_id: str) -> str:
        """"resumes at step K of N" when the cell's last checkpoint is still there, else "restarts"."""
        progress = self.progress(cell_id)
        checkpoint = progress.get("checkpoint")
        if checkpoint and os.path.isfile(checkpoint) and progress.get("step", 0) < progress.get("total", 0):
            return f"resumes at step {progress['step']} of {progress['total']}"
        return "restarts"

    def record_failure(self, cell_id: str, error: str, tail: str, log: str | None) -> None:
        failures = self.failures(cell_id) + [{"error": error, "tail": tail, "log": log, "host": socket.gethostname(),
                                              "when": time.strftime("%Y-%m-%d %H:%M:%S")}]
        _write_json(self._file(cell_id, FAILURES), failures)

    def forget_failures(self, cell_id: str) -> None:
        for name in (FAILURES, ATTEMPTS):  # the no-progress count starts again too
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(cell_id, name))

    def forget_result(self, cell_id: str) -> None:
        """Mark a done cell as not done (its command found the result's own files gone): it runs again."""
        path = self._file(cell_id, DONE)
        if os.path.exists(path):
            os.unlink(path)

    def record_submission(self, cell_id: str, job_id: str, log: str) -> None:
        _write_json(self._file(cell_id, SUBMITTED), {"job_id": job_id, "log": log,
                                                     "when": time.strftime("%Y-%m-%d %H:%M:%S")})

    def was_submitted(self, cell_id: str) -> bool:
        return isinstance(_read_record(self._file(cell_id, SUBMITTED)), dict)

    def state(self, cell_id: str, live_jobs: set[str] | None = None) -> CellState:
        """The cell's state. `live_jobs`: SLURM job ids the scheduler still holds (None: not asked)."""
        done = self._done(cell_id)
        if isinstance(done, dict):
            return CellState("done", result=done["result"], log=done.get("log"))
        failures = self.failures(cell_id)
        if self.failed_for_good(cell_id):
            last = failures[-1]
            why = last["error"] if last.get("final") else f"failed {len(failures)} times"
            return CellState("failed", f"{why}; not retried", failures=failures, log=last.get("log"))
        running = _read_record(self._file(cell_id, RUNNING))
        submitted = _read_record(self._file(cell_id, SUBMITTED))
        submitted = submitted if isinstance(submitted, dict) and "job_id" in submitted else None
        locked = is_locked(self.cell_dir(cell_id))
        if locked or (locked is None and isinstance(running, dict) and _attempt_alive(running, live_jobs)):
            record = running if isinstance(running, dict) else {}
            where = (f"SLURM job {record['job_id']}" if record.get("job_id")
                     else f"pid {record.get('pid', '?')}") + f" on {record.get('host', '?')}"
            return CellState("running", f"{where} since {record.get('started', '?')}", failures=failures,
                             log=record.get("log"))
        if submitted is not None and live_jobs is not None and submitted["job_id"] in live_jobs:
            return CellState("running" if running else "pending", f"queued as SLURM job {submitted['job_id']}",
                             failures=failures, log=submitted.get("log"))
        if done == UNREADABLE:
            return CellState("unknown", f"its {DONE} is unreadable (empty or torn); the next launch sets it aside "
                                        f"and runs the cell again ({self.resume_point(cell_id)})", failures=failures)
        parts = []
        if running == UNREADABLE:
            parts.append(f"interrupted (its {RUNNING} is unreadable)")
        elif isinstance(running, dict):
            parts.append(f"interrupted (last attempt started {running.get('started', '?')} on "
                         f"{running.get('host', '?')})")
        if running is not None or self.progress(cell_id):
            parts.append(self.resume_point(cell_id))
        if failures:
            parts.append(f"failed once ({failures[-1].get('error', '?')}); will retry")
        return CellState("pending", "; ".join(parts), failures=failures,
                         log=running.get("log") if isinstance(running, dict) else None)

    def finished(self) -> list[tuple[Cell, Any]]:
        """(cell, result) of every done cell, in the study's cell order."""
        return [(cell, result) for cell in self.cells.values() if (result := self.result(cell.id)) is not None]

    def missing(self) -> list[str]:
        return [cell_id for cell_id in self.cells if not self.is_done(cell_id)]


def _attempt_alive(running: dict, live_jobs: set[str] | None) -> bool:
    if running.get("job_id"):
        # unknown when the scheduler was not asked: report it as running rather than hide it
        return live_jobs is None or running["job_id"] in live_jobs
    if running.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell from here
    return _process_alive(int(running["pid"]), running.get("pid_start"))


def _process_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc/<pid>/stat; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return fields[0], fields[19]


def _process_alive(pid: int, recorded_start: str | None) -> bool:
    """Alive and the same process: a killed worker may linger as a zombie, and its pid may be reused."""
    if os.path.isdir("/proc/self"):
        found = _process_start(pid)
        return found is not None and found[0] not in ("Z", "X") and recorded_start in (None, found[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _study_record(directory: str) -> dict | None | str:
    record = _read_record(os.path.join(directory, STUDY_FILE))
    if isinstance(record, dict):
        try:
            Study(directory, record)
        except (KeyError, TypeError, AttributeError, ValueError):
            return UNREADABLE
    return record


def load_study(directory: str) -> Study:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"DIR: {directory!r} is a file; give a study's folder (the --out of its command)")
    record = _study_record(directory)
    if record is None:
        raise UsageError(f"DIR: {directory!r} holds no study (no {STUDY_FILE}); give the --out of a "
                         f"`maskedbert stability` or `maskedbert srnet` run")
    if record == UNREADABLE:
        raise UsageError(f"DIR: {os.path.join(directory, STUDY_FILE)!r} is unreadable (empty or torn), so the "
                         f"study's cells are unknown; run the command that made the study again with the same "
                         f"--out: it rewrites the file and keeps every finished run")
    return Study(directory, record)


def prepare_study(directory: str, *, kind: str, runner: str, settings: dict, cells: list[Cell],
                  reporter: str | None = None, info: dict | None = None) -> Study:
    """Check `cells` and `settings` against what `directory` holds, then record this launch's study.

    Raises UsageError (before writing anything) when the directory holds a study of another kind or
    with other settings: its finished cells would not be comparable. The cell list may change between
    launches (more seeds, fewer configurations); the recorded list is this launch's.
    """
    ids = [cell.id for cell in cells]
    if len(set(ids)) != len(ids):
        raise ValueError(f"cell ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    for cell in cells:
        if not all(_ID_PART.match(part) for part in cell.id.split("/")):
            raise ValueError(f"cell id {cell.id!r}: use letters, digits and ._=+- in '/'-separated parts")
        unknown = [need for need in cell.needs if need not in ids]
        if unknown:
            raise ValueError(f"cell {cell.id!r} needs cells that are not in the study: {unknown}")
    settings = _normalized(settings)
    previous = _study_record(directory)
    if previous == UNREADABLE:  # torn or emptied: this launch's record replaces it (finished cells are kept)
        moved = set_aside(os.path.join(directory, STUDY_FILE))
        log_status(f"[sweep] {os.path.join(directory, STUDY_FILE)} was unreadable; moved to {moved} and written again",
               level=logging.WARNING)
        previous = None
    if previous is not None:
        if previous["kind"] != kind:
            raise UsageError(f"--out: {directory!r} holds a {previous['kind']} study, not a {kind} one; "
                             f"use another --out")
        if previous["settings"] != settings:
            changed = ", ".join(_changed_keys(previous["settings"], settings)) or "?"
            raise UsageError(f"--out: {directory!r} holds a study with other settings (changed: {changed}); "
                             f"use another --out, or delete the directory to start over")
    record = {"kind": kind, "runner": runner, "reporter": reporter, "settings": settings,
              "info": _normalized(info or {}),
              "cells": [{"id": c.id, "spec": _normalized(c.spec), "needs": list(c.needs)} for c in cells]}
    os.makedirs(directory, exist_ok=True)
    _write_json(os.path.join(directory, STUDY_FILE), record)
    return Study(directory, record)


def _job_id() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _slurm_log() -> str | None:
    try:
        import submitit  # optional dependency

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # not inside a submitit job
        return None


def execute_cell(study_dir: str, cell_id: str, *, kinds: StudyKinds, progress: bool = False,
                 log: str | None = None) -> str:
    """Run one cell here, now, unless it is done, failed for good or running elsewhere; returns its status
    afterwards ("done", "failed", "pending" after a first failure or an interruption, "blocked" when a
    needed cell is not done, "running" when another process holds the cell).

    The one function every launcher calls (in process, in a local worker, in a SLURM job). The attempt
    holds the cell's lock. An exception in the runner is recorded with its traceback; KeyboardInterrupt
    (Ctrl-C, SIGTERM in a worker: the training loop checkpoints first) is not a failure and propagates.
    Every checkpoint the cell's training saves is counted in sweep_progress.json; an attempt that
    starts after NO_PROGRESS_ATTEMPTS interrupted attempts without a new checkpoint fails the cell for
    good instead. A runner name `kinds` does not know raises UsageError before anything is written.
    """
    study = load_study(study_dir)
    cell = study.cells[cell_id]
    if study.is_done(cell_id):
        return "done"
    if study.failed_for_good(cell_id):
        return "failed"
    missing = [need for need in cell.needs if not study.is_done(need)]
    if missing:
        log_status(f"[sweep] {cell_id}: not run, it needs {', '.join(missing)} (not done)")
        return "blocked"
    runner = kinds.runner(study.runner)
    directory = study.cell_dir(cell_id)
    lock = _claim_cell(directory, cell_id)
    if lock is None:
        return "running"
    with lock:
        return _attempt(study, cell_id, cell, runner, directory, progress=progress, log=log)


def _claim_cell(directory: str, cell_id: str) -> contextlib.ExitStack | None:
    """The cell's lock, held (exit the returned stack to release it), or None when another process holds it."""
    last = None
    for wait in (0.0, 0.2, 0.5):  # a `status` probing the lock holds it for a moment
        time.sleep(wait)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(folder_lock(directory, what=f"cell {cell_id}"))
        except FolderBusyError as busy:
            last = busy
            continue
        return stack
    log_status(f"[sweep] {cell_id}: not run here: {last}")
    return None


def _attempt(study: Study, cell_id: str, cell: Cell, runner: Callable, directory: str, *, progress: bool,
             log: str | None) -> str:
    from maskedbert.train.checkpoint import checkpoint_listener  # keeps --help torch-free

    remove_stale_temporaries(directory)  # a killed attempt's half-written records (this attempt holds the lock)
    done_path = os.path.join(directory, DONE)
    if os.path.exists(done_path) and not study.is_done(cell_id):
        log_status(f"[sweep] {cell_id}: {done_path} was unreadable; moved to {set_aside(done_path)}")
    if _stalled(study, cell_id):
        return "failed"
    job_id = _job_id()
    if job_id and os.environ.get("SLURM_CPUS_PER_TASK") and "torch" not in sys.modules:
        os.environ.setdefault("OMP_NUM_THREADS", os.environ["SLURM_CPUS_PER_TASK"])  # not the node's every core
    log = log or (_slurm_log() if job_id else None)
    here = _process_start(os.getpid()) if os.path.isdir("/proc/self") else None
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    attempts = _read_json(os.path.join(directory, ATTEMPTS))
    attempts = attempts if isinstance(attempts, list) else []
    attempts.append({"started": started, "host": socket.gethostname(), "job_id": job_id,
                     "saves_before": study.progress(cell_id).get("saves", 0)})
    _write_json(os.path.join(directory, ATTEMPTS), attempts)
    _write_json(os.path.join(directory, RUNNING), {"host": socket.gethostname(), "pid": os.getpid(),
                                                   "pid_start": here[1] if here else None,
                                                   "job_id": job_id, "log": log, "started": started,
                                                   "dir": directory})
    start = time.monotonic()

    def count_checkpoint(path: str, step: int, total: int) -> None:
        saves = study.progress(cell_id).get("saves", 0) + 1
        _write_json(os.path.join(directory, PROGRESS), {"saves": saves, "step": step, "total": total,
                                                        "checkpoint": os.path.abspath(path),
                                                        "when": time.strftime("%Y-%m-%d %H:%M:%S")})

    try:
        with checkpoint_listener(count_checkpoint):
            result = runner(cell.spec, directory, progress=progress)
    except Exception as exc:
        tail = "".join(traceback.format_exception(exc))[-4000:]
        study.record_failure(cell_id, f"{type(exc).__name__}: {exc}".splitlines()[0][:300], tail, log)
        log_status(f"[sweep] {cell_id}: FAILED: {type(exc).__name__}: {exc}", level=logging.WARNING)
        attempts[-1]["failed"] = True
        _write_json(os.path.join(directory, ATTEMPTS), attempts)
        return "failed" if study.failed_for_good(cell_id) else "pending"
    else:
        _write_json(done_path, {"result": result, "seconds": round(time.monotonic() - start, 3),
                                "host": socket.gethostname(), "job_id": job_id, "log": log})
        return "done"
    finally:  # the attempt is over (only a kill leaves the record: the cell then reads as interrupted)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, RUNNING))


def _stalled(study: Study, cell_id: str) -> bool:
    """Fail the cell for good when its last NO_PROGRESS_ATTEMPTS attempts were interrupted (not failed)
    and none of them saved a checkpoint; True when it did."""
    attempts = _read_json(os.path.join(study.cell_dir(cell_id), ATTEMPTS))
    if not isinstance(attempts, list) or len(attempts) < NO_PROGRESS_ATTEMPTS:
        return False
    now = study.progress(cell_id).get("saves", 0)
    recent = attempts[-NO_PROGRESS_ATTEMPTS:]
    if any(not isinstance(a, dict) or a.get("failed") or a.get("saves_before") != now for a in recent):
        return False
    why = (f"no progress in {NO_PROGRESS_ATTEMPTS} attempts: each was stopped (killed, or out of time) before it "
           f"saved a checkpoint ({study.resume_point(cell_id)}); give the runs more time (--slurm-time) or "
           f"checkpoint more often, then --retry-failed")
    failures = study.failures(cell_id) + [{"error": why, "tail": "", "log": None, "host": socket.gethostname(),
                                           "when": time.strftime("%Y-%m-%d %H:%M:%S"), "final": True}]
    _write_json(os.path.join(study.cell_dir(cell_id), FAILURES), failures)
    log_status(f"[sweep] {cell_id}: FAILED: {why}", level=logging.WARNING)
    return True
