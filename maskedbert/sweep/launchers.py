"""Where a study's cells run: `inline` (this process, one after another), `local` (worker processes on
this machine, optionally pinned to GPUs) or `slurm` (one SLURM array task per cell, via submitit).

    add_launcher_arguments(parser)             # --launcher, --workers, --gpus, --runs-per-gpu, --slurm-*
    options = launch_options_from_args(args)   # checked: UsageError on a bad flag
    check_launcher(options)                    # before writing anything: submitit there? scheduler answers?
    outcome = launch(study, options, kinds=kinds)   # runs (inline/local) or submits (slurm) what is not done yet

Cells run in the study's order; a cell starts only when the cells it `needs` are done. Each launch
attempts every cell that is not done, not failed for good and not running elsewhere, once.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

from maskedbert.errors import UsageError
from maskedbert.help_text import default_text

from . import slurm
from .study import MAX_FAILURES, Study, StudyKinds, execute_cell

__all__ = ["LaunchOptions", "LaunchOutcome", "add_launcher_arguments", "launch_options_from_args", "check_launcher",
           "launch", "cells_to_run"]

LAUNCHERS = ("inline", "local", "slurm")


@dataclasses.dataclass
class LaunchOptions:
    launcher: str = "inline"
    workers: int | None = None           # local: processes at once (default: cores, or GPUs x runs per GPU)
    gpus: list[str] | None = None        # local: CUDA device ids; each worker sees one (CUDA_VISIBLE_DEVICES)
    runs_per_gpu: int = 1
    threads: int | None = None           # CPU threads per worker (default: cores // workers)
    retry_failed: bool = False           # forget earlier failures and try those cells again
    progress: bool = True                # inline: progress bars
    slurm_partition: str | None = None
    slurm_time: int = 60                 # minutes
    slurm_gpus_per_task: int | None = None
    slurm_cpus_per_task: int | None = None
    slurm_array_parallelism: int = 256
    slurm_setup: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LaunchOutcome:
    ran: dict[str, str] = dataclasses.field(default_factory=dict)   # cell id -> status after this launch
    submitted: list[str] = dataclasses.field(default_factory=list)  # SLURM job ids
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # cell id -> why it did not run


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the runs go (see docs/SCALING.md)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="inline",
                       help="inline: here, one after another; local: worker processes on this machine; "
                            "slurm: one SLURM job per run via submitit (returns after submitting)")
    default_text(group.add_argument("--workers", type=int, help="local: runs at once"), "one per core, or per GPU slot")
    group.add_argument("--gpus", help="local: comma-separated CUDA device ids, e.g. 0,1; each worker is pinned to one")
    group.add_argument("--runs-per-gpu", type=int, default=1, help="local: workers sharing each GPU")
    default_text(group.add_argument("--threads-per-worker", dest="threads", type=int,
                                    help="CPU threads per worker (cores are not oversubscribed)"), "cores // workers")
    group.add_argument("--retry-failed", action="store_true",
                       help=f"run again the cells that failed {MAX_FAILURES} times (else they are reported, not rerun)")
    default_text(group.add_argument("--slurm-partition", help="slurm: partition"), "the cluster's")
    group.add_argument("--slurm-time", default="60", help="slurm: time limit per job, minutes or [D-]HH:MM[:SS]")
    group.add_argument("--slurm-gpus-per-task", type=int, help="slurm: GPUs per job")
    group.add_argument("--slurm-cpus-per-task", type=int, help="slurm: CPUs per job (also its torch threads)")
    group.add_argument("--slurm-array-parallelism", type=int, default=256,
                       help="slurm: jobs of the array running at once")
    group.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="slurm: a shell line run before the job, e.g. 'module load cuda' (repeatable)")


def _parse_minutes(text: str) -> int:
    """"90" -> 90; "1:30" / "01:30:00" -> 90; "1-00:00" -> 1440 (SLURM's own time formats)."""
    try:
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if len(parts) == 1 and not days:
            minutes = parts[0]
        else:
            hours, mins, secs = (parts + [0, 0])[:3] if len(parts) > 1 else (parts[0], 0, 0)
            minutes = int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    except ValueError:
        minutes = 0
    if minutes < 1:
        raise UsageError(f"--slurm-time: expected minutes or [D-]HH:MM[:SS] of at least a minute, got {text!r}")
    return minutes


def _positive(flag: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"{flag}: expected a whole number >= 1, got {value}")
    return value


def launch_options_from_args(args: argparse.Namespace, *, progress: bool = True) -> LaunchOptions:
    """The checked options; `--parallel N` (older flag), where the parser has it, means --launcher local --workers N."""
    launcher, workers = args.launcher, args.workers
    parallel = getattr(args, "parallel", None)
    if parallel is not None:
        _positive("--parallel", parallel)
        if launcher not in ("inline", "local") or (workers is not None and workers != parallel):
            raise UsageError(f"--parallel {parallel} means --launcher local --workers {parallel}; give one of them")
        launcher, workers = ("local", parallel) if parallel > 1 else (launcher, workers)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if args.gpus is not None and not gpus:
        raise UsageError(f"--gpus: expected comma-separated device ids such as 0,1, got {args.gpus!r}")
    local_only = {"--workers": workers, "--gpus": gpus, "--threads-per-worker": args.threads}
    given = [flag for flag, value in local_only.items() if value is not None] + (
        ["--runs-per-gpu"] if args.runs_per_gpu != 1 else [])
    if launcher == "inline" and given:
        raise UsageError(f"{given[0]} applies to --launcher local; add --launcher local")
    if args.runs_per_gpu != 1 and not gpus:
        raise UsageError("--runs-per-gpu: give --gpus too (which devices to share)")
    if gpus and workers is not None and workers != len(gpus) * args.runs_per_gpu:
        raise UsageError(f"--workers {workers}: with --gpus the worker count is len(--gpus) x --runs-per-gpu "
                         f"= {len(gpus) * args.runs_per_gpu}; leave --workers out")
    slurm_given = [f for f, v in (("--slurm-partition", args.slurm_partition),
                                  ("--slurm-gpus-per-task", args.slurm_gpus_per_task),
                                  ("--slurm-cpus-per-task", args.slurm_cpus_per_task),
                                  ("--slurm-setup", args.slurm_setup or None)) if v is not None]
    if slurm_given and launcher != "slurm":
        raise UsageError(f"{slurm_given[0]} applies to --launcher slurm; add --launcher slurm")
    return LaunchOptions(
        launcher=launcher, workers=_positive("--workers", workers), gpus=gpus,
        runs_per_gpu=_positive("--runs-per-gpu", args.runs_per_gpu), threads=_positive("--threads-per-worker", args.threads),
        retry_failed=args.retry_failed, progress=progress, slurm_partition=args.slurm_partition,
        slurm_time=_parse_minutes(str(args.slurm_time)),
        slurm_gpus_per_task=_positive("--slurm-gpus-per-task", args.slurm_gpus_per_task),
        slurm_cpus_per_task=_positive("--slurm-cpus-per-task", args.slurm_cpus_per_task),
        slurm_array_parallelism=_positive("--slurm-array-parallelism", args.slurm_array_parallelism),
        slurm_setup=list(args.slurm_setup))


def check_launcher(options: LaunchOptions) -> None:
    """Fail now, with one line, when the launcher cannot work here (before the study writes anything)."""
    if options.launcher == "slurm":
        slurm.check_available()


def cells_to_run(study: Study, *, retry_failed: bool = False, live_jobs: set[str] | None = None
                 ) -> tuple[list[str], dict[str, str]]:
    """(cell ids to attempt now, {cell id: why not} for the others that are not done)."""
    if live_jobs is None and any(study.was_submitted(c) for c in study.cells):
        live_jobs = slurm.live_jobs()  # cells queued on SLURM are not run here as well
    todo, skipped = [], {}
    for cell_id in study.cells:
        if retry_failed and len(study.failures(cell_id)) >= MAX_FAILURES:
            study.forget_failures(cell_id)
        state = study.state(cell_id, live_jobs)
        if state.status == "done":
            continue
        if state.status in ("failed", "running") or state.detail.startswith("queued"):
            skipped[cell_id] = f"{state.status}: {state.detail}"
        else:
            todo.append(cell_id)
    return todo, skipped


def launch(study: Study, options: LaunchOptions, *, kinds: StudyKinds,
           on_done: Callable[[str, Any], None] | None = None) -> LaunchOutcome:
    """Run (inline, local) or submit (slurm) every cell of `study` that is not done, failed for good or running;
    `kinds` says what the study's runner name means (here, in local workers and in SLURM jobs)."""
    if options.launcher == "slurm":
        todo, skipped = cells_to_run(study, retry_failed=options.retry_failed, live_jobs=slurm.live_jobs())
        return LaunchOutcome(skipped=skipped, submitted=slurm.submit(study, options, kinds, todo, skipped))
    todo, skipped = cells_to_run(study, retry_failed=options.retry_failed)
    for cell_id in study.cells:
        if study.is_done(cell_id):
            print(f"[sweep] {cell_id}: finished earlier, not rerun", flush=True)
    for cell_id, why in skipped.items():
        print(f"[sweep] {cell_id}: not run ({why})", flush=True)
    outcome = LaunchOutcome(skipped=skipped)
    if options.launcher == "inline":
        for cell_id in todo:
            if any(need in outcome.ran and outcome.ran[need] != "done" for need in study.cells[cell_id].needs):
                outcome.skipped[cell_id] = "a cell it needs did not finish"
                continue
            outcome.ran[cell_id] = execute_cell(study.dir, cell_id, kinds=kinds, progress=options.progress)
            _announce(study, cell_id, outcome.ran[cell_id], on_done)
    else:
        _run_local(study, todo, options, outcome, on_done, kinds.worker_module)
    return outcome


def _announce(study: Study, cell_id: str, status: str, on_done) -> None:
    if status == "done":
        if on_done is not None:
            on_done(cell_id, study.result(cell_id))
        else:
            print(f"[sweep] {cell_id}: done", flush=True)
    elif status != "blocked":
        failures = study.failures(cell_id)
        last = failures[-1] if failures else {}
        again = "reported, not retried" if status == "failed" else "retried on the next launch"
        print(f"[sweep] {cell_id}: FAILED ({last.get('error', status)}); {again}; log: {last.get('log')}", flush=True)


def _worker_slots(options: LaunchOptions, cells: int) -> list[dict[str, str]]:
    """One environment overlay per worker: pinned GPU (if any) and CPU threads (the cores shared out)."""
    cores = os.cpu_count() or 1
    if options.gpus:
        pins = [gpu for gpu in options.gpus for _ in range(options.runs_per_gpu)]
    else:  # default: a worker per core, but no idle workers holding threads when there are fewer cells
        pins = [None] * (options.workers or max(1, min(cores, cells)))
    threads = options.threads or max(1, cores // len(pins))
    if len(pins) * threads > cores:
        print(f"[sweep] note: {len(pins)} workers x {threads} threads > {cores} cores: they will slow each other",
              file=sys.stderr)
    slots = []
    for pin in pins:
        # torch sizes its thread pool from OMP_NUM_THREADS when it is first imported (in the worker)
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if pin is not None:
            env["CUDA_VISIBLE_DEVICES"] = pin
        slots.append(env)
    return slots


def _log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _will_not_finish(study: Study, cell_id: str, outcome: LaunchOutcome, waiting: list[str], running: dict) -> bool:
    if study.is_done(cell_id):
        return False
    if cell_id in outcome.ran:  # attempted in this launch and not done
        return True
    return cell_id not in waiting and all(entry[0] != cell_id for entry in running.values())


def _run_local(study: Study, todo: list[str], options: LaunchOptions, outcome: LaunchOutcome, on_done,
               worker_module: str) -> None:
    """A small scheduler: each cell runs in a fresh `python -m <worker_module>` process (so a crash
    or a kill takes only that cell), at most one per slot, its output in <cell dir>/sweep_worker.log."""
    slots = _worker_slots(options, len(todo))
    free = list(range(len(slots)))
    waiting = list(todo)
    running: dict[int, tuple[str, subprocess.Popen, int, Any]] = {}
    try:
        while waiting or running:
            for cell_id in list(waiting):
                if any(_will_not_finish(study, need, outcome, waiting, running) for need in study.cells[cell_id].needs):
                    waiting.remove(cell_id)
                    outcome.skipped[cell_id] = "a cell it needs did not finish"
                    print(f"[sweep] {cell_id}: not run (a cell it needs did not finish)", flush=True)
            ready = [c for c in waiting if all(study.is_done(n) for n in study.cells[c].needs)]
            while free and ready:
                cell_id = ready.pop(0)
                waiting.remove(cell_id)
                slot = free.pop(0)
                log_path = os.path.join(study.cell_dir(cell_id), "sweep_worker.log")
                os.makedirs(os.path.dirname(log_path), exist_ok=True)
                log_file = open(log_path, "a", encoding="utf-8")
                process = subprocess.Popen(
                    [sys.executable, "-m", worker_module, study.dir, cell_id, "--log", log_path],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **slots[slot]})
                running[slot] = (cell_id, process, len(study.failures(cell_id)), log_file)
            time.sleep(0.2)
            for slot, (cell_id, process, failures_before, log_file) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                log_file.close()
                del running[slot]
                free.append(slot)
                log_path = log_file.name
                if study.is_done(cell_id):
                    status = "done"
                elif code == 3:
                    status = "blocked"
                else:
                    if len(study.failures(cell_id)) == failures_before:  # died before it could say why
                        why = f"worker killed by signal {-code}" if code < 0 else f"worker exited with status {code}"
                        study.record_failure(cell_id, why, _log_tail(log_path), log_path)
                    status = "failed" if len(study.failures(cell_id)) >= MAX_FAILURES else "pending"
                outcome.ran[cell_id] = status
                _announce(study, cell_id, status, on_done)
    except KeyboardInterrupt:
        for cell_id, process, _, _ in running.values():
            process.send_signal(signal.SIGTERM)
        for cell_id, process, _, log_file in running.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log_file.close()
        raise
