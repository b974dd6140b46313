"""`python -m maskedbert.sweep.worker STUDY_DIR CELL_ID`: run one cell in this process (the local launcher
starts one per cell). Exit status: 0 done, 1 failed (recorded in the cell), 3 blocked (a needed cell is
not done), 130 interrupted (SIGINT/SIGTERM; not a failure, the cell resumes on the next launch)."""
from __future__ import annotations

import argparse
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskedbert.sweep.worker")
    parser.add_argument("study_dir")
    parser.add_argument("cell_id")
    parser.add_argument("--log", help="where this worker's output goes (recorded with a failure)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from .study import execute_cell

    try:
        status = execute_cell(args.study_dir, args.cell_id, progress=False, log=args.log)
    except KeyboardInterrupt:
        print(f"[sweep] {args.cell_id}: interrupted; it resumes on the next launch", flush=True)
        return 130
    return {"done": 0, "blocked": 3}.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
