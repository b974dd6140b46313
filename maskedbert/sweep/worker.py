"""One cell in this process: the body of the worker module a `StudyKinds` names (the local launcher starts
`python -m <worker module> STUDY_DIR CELL_ID --log PATH` once per cell; maskedbert's own is
maskedbert.experiments.worker). Exit status: 0 done, 1 failed (recorded in the cell), 3 blocked (a needed
cell is not done), 130 interrupted (SIGINT/SIGTERM; not a failure, the cell resumes on the next launch)."""
from __future__ import annotations

import argparse
import signal

from .study import StudyKinds, execute_cell


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, *, kinds: StudyKinds) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {kinds.worker_module}")
    parser.add_argument("study_dir")
    parser.add_argument("cell_id")
    parser.add_argument("--log", help="where this worker's output goes (recorded with a failure)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        status = execute_cell(args.study_dir, args.cell_id, kinds=kinds, progress=False, log=args.log)
    except KeyboardInterrupt:
        print(f"[sweep] {args.cell_id}: interrupted; it resumes on the next launch", flush=True)
        return 130
    return {"done": 0, "blocked": 3}.get(status, 1)
