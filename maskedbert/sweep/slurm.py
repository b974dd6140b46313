"""`--launcher slurm`: each cell a task of a SLURM job array, submitted through submitit (`pip install
submitit`, or `pip install -e ".[slurm]"` in a clone). Cells that need other cells go in a later array that starts
after the earlier one ends (`--dependency=afterany`); a cell whose needs did not finish does nothing.

Jobs run `maskedbert.sweep.study.execute_cell(study_dir, cell_id, kinds=...)` with this Python (the study
directory must be on a file system the nodes share). Logs: <study>/slurm/<job id>/.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from maskedbert.errors import UsageError
from maskedbert.log import status as log_status

from .study import Study, StudyKinds, execute_cell

__all__ = ["check_available", "live_jobs", "submit"]


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check_available() -> None:
    """UsageError in one line when submitit is missing or the scheduler does not answer."""
    try:
        import submitit  # noqa: F401  # optional dependency
    except ImportError:
        raise UsageError("--launcher slurm: needs the optional package submitit; "
                         "pip install submitit (or, in a maskedbert clone, pip install -e '.[slurm]')") from None
    if not shutil.which("sbatch"):
        raise UsageError("--launcher slurm: no `sbatch` on PATH; run this on a SLURM login node "
                         "(or see docs/SCALING.md for a one-machine SLURM)")
    try:
        probe = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--launcher slurm: the SLURM scheduler does not answer (squeue: {exc})") from None
    if probe.returncode != 0:
        said = _one_line(probe.stderr)
        said = said if said.startswith("squeue") else f"squeue: {said}"
        raise UsageError(f"--launcher slurm: the SLURM scheduler does not answer ({said})")


def live_jobs() -> set[str] | None:
    """Job ids (array tasks as "<job>_<task>") the scheduler still holds; None when it cannot be asked."""
    if not shutil.which("squeue"):
        return None
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _levels(study: Study, cell_ids: list[str]) -> list[list[str]]:
    """Cells grouped so each group only needs cells of earlier groups (or cells already done)."""
    depth: dict[str, int] = {}

    def level(cell_id: str) -> int:
        if cell_id not in depth:
            needs = [n for n in study.cells[cell_id].needs if n in cell_ids]
            depth[cell_id] = 1 + max(map(level, needs)) if needs else 0
        return depth[cell_id]

    groups: dict[int, list[str]] = {}
    for cell_id in cell_ids:
        groups.setdefault(level(cell_id), []).append(cell_id)
    return [groups[k] for k in sorted(groups)]


def executor_parameters(options, kind: str) -> dict:
    """submitit.SlurmExecutor parameters (sbatch options) for one cell per array task."""
    parameters = dict(job_name=f"maskedbert-{kind}", time=options.slurm_time, nodes=1, ntasks_per_node=1,
                      array_parallelism=options.slurm_array_parallelism, setup=list(options.slurm_setup),
                      stderr_to_stdout=True)
    if options.slurm_partition:
        parameters["partition"] = options.slurm_partition
    if options.slurm_gpus_per_task:
        parameters["gpus_per_task"] = options.slurm_gpus_per_task
    if options.slurm_cpus_per_task:
        parameters["cpus_per_task"] = options.slurm_cpus_per_task
    return parameters


def submit(study: Study, options, kinds: StudyKinds, todo: list[str], skipped: dict[str, str]) -> list[str]:
    """Submit the cells `todo` (one array job per level of needs); returns the array job ids."""
    import submitit  # optional dependency: only this launcher needs it (check_available says how to install it)

    for cell_id, why in skipped.items():
        log_status(f"[sweep] {cell_id}: not submitted ({why})")
    done = sum(study.is_done(c) for c in study.cells)
    submitted: list[str] = []
    if not todo:
        log_status(f"[sweep] nothing to submit: {done} of {len(study.cells)} cells done, {len(skipped)} running or failed")
        return submitted
    executor = submitit.SlurmExecutor(folder=os.path.join(study.dir, "slurm", "%j"), python=sys.executable)
    parameters = executor_parameters(options, study.kind)
    previous_array = None
    for group in _levels(study, todo):
        if previous_array:
            parameters["dependency"] = f"afterany:{previous_array}"
        executor.update_parameters(**parameters)
        try:
            jobs = executor.map_array(functools.partial(execute_cell, kinds=kinds), [study.dir] * len(group), group)
        except Exception as exc:  # sbatch refused or the controller went away: submitit wraps its stderr
            raise UsageError(f"--launcher slurm: sbatch failed: {_one_line(exc)}") from None
        for cell_id, job in zip(group, jobs):
            study.record_submission(cell_id, job.job_id, str(job.paths.stdout))
        previous_array = jobs[0].job_id.split("_")[0]
        submitted.append(previous_array)
        log_status(f"[sweep] submitted {len(group)} cells as SLURM array job {previous_array} "
              f"({jobs[0].job_id} .. {jobs[-1].job_id}); logs in {os.path.join(study.dir, 'slurm', previous_array)}/")
    log_status(f"[sweep] follow: squeue -j {','.join(submitted)}   |   maskedbert status {study.dir}\n"
          f"[sweep] when they are done: maskedbert report {study.dir}   (resubmitting the same command "
          f"runs only cells that are missing)")
    return submitted
