"""A toy sweep runner for tests/test_sweep.py: no torch, milliseconds per cell. KINDS names it "toy";
`python -m sweep_toy STUDY_DIR CELL_ID` is its worker (tests/ on the path).

spec: {"value": x, "fail": bool (raise), "sleep": seconds, "kill_self": bool (SIGKILL its own process)}.
Every attempt appends a line to <cell dir>/attempts.txt so tests can count reruns.
"""
import os
import signal
import sys
import time

from maskedbert.errors import UsageError
from maskedbert.sweep import StudyKinds, worker



def run(spec, cell_dir, progress=False):
    with open(os.path.join(cell_dir, "attempts.txt"), "a") as f:
        f.write("attempt\n")
    if spec.get("sleep"):
        time.sleep(spec["sleep"])
    if spec.get("kill_self"):
        os.kill(os.getpid(), signal.SIGKILL)
    if spec.get("fail"):
        raise RuntimeError(f"toy cell {spec['value']} fails on purpose")
    return {"double": 2 * spec["value"], "pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": os.environ.get("OMP_NUM_THREADS")}


def report(study):
    rows = [f"{cell.id}={result['double']}" for cell, result in study.finished()]
    path = os.path.join(study.dir, "toy_report.txt")
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return {"table": path}


def _runner(name):
    if name != "toy":
        raise UsageError(f"unknown runner {name!r}")
    return run


def _reporter(name):
    if name != "toy":
        raise UsageError(f"unknown reporter {name!r}")
    return report


KINDS = StudyKinds(runner=_runner, reporter=_reporter, worker_module="sweep_toy")

if __name__ == "__main__":
    sys.exit(worker.main(kinds=KINDS))
