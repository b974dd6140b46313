"""A study on disk: its settings, its cells and each cell's state, readable from any process or machine.

    <study dir>/sweep.json               kind, runner, reporter, settings (compared on relaunch), info, cells
    <study dir>/<cell id>/               the cell's own directory (the runner writes what it likes there)
        sweep_running.json               host, pid, SLURM job id and log of the attempt now (or last) running
        sweep_failures.json              one record per failed attempt: error line, traceback tail, log path
        sweep_done.json                  {"result": ...}: written last (atomically), so it marks a finished cell
        sweep_submitted.json             SLURM job id and log path, written at submission

A cell is done when sweep_done.json exists; it is never rerun. A cell whose attempts failed
MAX_FAILURES times is `failed` and no launcher retries it (`forget_failures` clears the record). A
cell whose attempt died without a trace (killed, preempted, out of time) goes back to pending; its
runner resumes from whatever checkpoint it left.

The runner and reporter are recorded by name and looked up through a `StudyKinds` that the caller
hands in (the experiments layer holds the registry), so this package imports no experiment and
never imports a module named in sweep.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import sys
import time
import traceback
from typing import Any, Callable

from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError

__all__ = ["Cell", "Study", "CellState", "StudyKinds", "prepare_study", "load_study", "execute_cell",
           "MAX_FAILURES", "STUDY_FILE"]

STUDY_FILE = "sweep.json"
DONE, RUNNING, FAILURES, SUBMITTED = "sweep_done.json", "sweep_running.json", "sweep_failures.json", "sweep_submitted.json"
MAX_FAILURES = 2  # a cell that failed this often is reported, not retried
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
    status: str                       # done | running | failed | pending
    detail: str = ""                  # why, in words: "interrupted ...", "queued as SLURM job 12_3", ...
    result: Any = None
    failures: list = dataclasses.field(default_factory=list)
    log: str | None = None


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


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

    def result(self, cell_id: str) -> Any:
        done = _read_json(self._file(cell_id, DONE))
        return None if done is None else done["result"]

    def is_done(self, cell_id: str) -> bool:
        return os.path.exists(self._file(cell_id, DONE))

    def failures(self, cell_id: str) -> list[dict]:
        return _read_json(self._file(cell_id, FAILURES)) or []

    def record_failure(self, cell_id: str, error: str, tail: str, log: str | None) -> None:
        failures = self.failures(cell_id) + [{"error": error, "tail": tail, "log": log, "host": socket.gethostname(),
                                              "when": time.strftime("%Y-%m-%d %H:%M:%S")}]
        _write_json(self._file(cell_id, FAILURES), failures)

    def forget_failures(self, cell_id: str) -> None:
        path = self._file(cell_id, FAILURES)
        if os.path.exists(path):
            os.unlink(path)

    def forget_result(self, cell_id: str) -> None:
        """Mark a done cell as not done (its command found the result's own files gone): it runs again."""
        path = self._file(cell_id, DONE)
        if os.path.exists(path):
            os.unlink(path)

    def record_submission(self, cell_id: str, job_id: str, log: str) -> None:
        _write_json(self._file(cell_id, SUBMITTED), {"job_id": job_id, "log": log,
                                                     "when": time.strftime("%Y-%m-%d %H:%M:%S")})

    def was_submitted(self, cell_id: str) -> bool:
        return os.path.exists(self._file(cell_id, SUBMITTED))

    def state(self, cell_id: str, live_jobs: set[str] | None = None) -> CellState:
        """The cell's state. `live_jobs`: SLURM job ids the scheduler still holds (None: not asked)."""
        done = _read_json(self._file(cell_id, DONE))
        if done is not None:
            return CellState("done", result=done["result"], log=done.get("log"))
        failures = self.failures(cell_id)
        if len(failures) >= MAX_FAILURES:
            return CellState("failed", f"failed {len(failures)} times; not retried", failures=failures,
                             log=failures[-1].get("log"))
        running = _read_json(self._file(cell_id, RUNNING))
        submitted = _read_json(self._file(cell_id, SUBMITTED))
        if running is not None:
            if _attempt_alive(running, live_jobs):
                where = f"SLURM job {running['job_id']}" if running.get("job_id") else f"pid {running['pid']}"
                return CellState("running", f"{where} on {running['host']} since {running['started']}",
                                 failures=failures, log=running.get("log"))
        if submitted is not None and live_jobs is not None and submitted["job_id"] in live_jobs:
            return CellState("running" if running else "pending", f"queued as SLURM job {submitted['job_id']}",
                             failures=failures, log=submitted.get("log"))
        detail = ""
        if running is not None:
            detail = f"interrupted (last attempt started {running['started']} on {running['host']}); resumes"
        if failures:
            detail = (detail + "; " if detail else "") + f"failed once ({failures[-1]['error']}); will retry"
        return CellState("pending", detail, failures=failures, log=(running or {}).get("log"))

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


def load_study(directory: str) -> Study:
    record = _read_json(os.path.join(directory, STUDY_FILE))
    if record is None:
        raise UsageError(f"DIR: {directory!r} holds no study (no {STUDY_FILE}); give the --out of a "
                         f"`maskedbert stability` run")
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
    previous = _read_json(os.path.join(directory, STUDY_FILE))
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
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # not inside a submitit job
        return None


def execute_cell(study_dir: str, cell_id: str, *, kinds: StudyKinds, progress: bool = False,
                 log: str | None = None) -> str:
    """Run one cell here, now, unless it is done or failed for good; returns its status afterwards
    ("done", "failed", "pending" after a first failure, or "blocked" when a needed cell is not done).

    The one function every launcher calls (in process, in a local worker, in a SLURM job). An
    exception in the runner is recorded with its traceback; KeyboardInterrupt (Ctrl-C, SIGTERM in a
    worker) is not a failure and propagates. A runner name `kinds` does not know raises UsageError
    before anything is written.
    """
    study = load_study(study_dir)
    cell = study.cells[cell_id]
    if study.is_done(cell_id):
        return "done"
    if len(study.failures(cell_id)) >= MAX_FAILURES:
        return "failed"
    missing = [need for need in cell.needs if not study.is_done(need)]
    if missing:
        print(f"[sweep] {cell_id}: not run, it needs {', '.join(missing)} (not done)", flush=True)
        return "blocked"
    runner = kinds.runner(study.runner)
    job_id = _job_id()
    if job_id and os.environ.get("SLURM_CPUS_PER_TASK") and "torch" not in sys.modules:
        os.environ.setdefault("OMP_NUM_THREADS", os.environ["SLURM_CPUS_PER_TASK"])  # not the node's every core
    log = log or (_slurm_log() if job_id else None)
    directory = study.cell_dir(cell_id)
    os.makedirs(directory, exist_ok=True)
    here = _process_start(os.getpid()) if os.path.isdir("/proc/self") else None
    _write_json(os.path.join(directory, RUNNING), {"host": socket.gethostname(), "pid": os.getpid(),
                                                   "pid_start": here[1] if here else None,
                                                   "job_id": job_id, "log": log,
                                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    start = time.monotonic()
    try:
        result = runner(cell.spec, directory, progress=progress)
    except Exception as exc:
        tail = "".join(traceback.format_exception(exc))[-4000:]
        study.record_failure(cell_id, f"{type(exc).__name__}: {exc}".splitlines()[0][:300], tail, log)
        print(f"[sweep] {cell_id}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return "failed" if len(study.failures(cell_id)) >= MAX_FAILURES else "pending"
    else:
        _write_json(os.path.join(directory, DONE), {"result": result, "seconds": round(time.monotonic() - start, 3),
                                                    "host": socket.gethostname(), "job_id": job_id, "log": log})
        return "done"
    finally:  # the attempt is over (only a kill leaves the record: the cell then reads as interrupted)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, RUNNING))
