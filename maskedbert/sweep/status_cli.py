"""`maskedbert status DIR`: where each cell of a study stands (done / running / failed / pending), with
a failed cell's last lines and log path. Asks SLURM (squeue) about submitted cells when it can.

    maskedbert status runs/rte
"""
from __future__ import annotations

import argparse
import sys

from maskedbert.errors import UsageError

from . import slurm
from .study import load_study

STATES = ("done", "running", "failed", "pending")


def describe(study_dir: str, *, tail_lines: int = 8) -> tuple[dict[str, list[str]], str]:
    """({state: [cell ids]}, the printable text)."""
    study = load_study(study_dir)
    live = slurm.live_jobs() if any(study.was_submitted(c) for c in study.cells) else None
    by_state: dict[str, list[str]] = {s: [] for s in STATES}
    lines = []
    for cell_id in study.cells:
        state = study.state(cell_id, live)
        by_state[state.status].append(cell_id)
        if state.status == "done":
            continue
        lines.append(f"  {state.status:8s} {cell_id}" + (f"  ({state.detail})" if state.detail else ""))
        if state.status == "failed":
            last = state.failures[-1]
            tail = [line for line in last.get("tail", "").splitlines() if line.strip()][-tail_lines:]
            lines += [f"           | {line}" for line in tail]
            lines.append(f"           log: {last.get('log') or '(ran inline: its output went to the terminal)'}")
        elif state.log:
            lines.append(f"           log: {state.log}")
    counts = ", ".join(f"{len(by_state[s])} {s}" for s in STATES)
    header = f"{study.kind} study in {study.dir}: {len(study.cells)} cells: {counts}"
    if live is None and any(study.was_submitted(c) for c in study.cells):
        header += "\n  (SLURM did not answer: states of submitted cells are as last recorded)"
    return by_state, "\n".join([header] + lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maskedbert status", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", metavar="DIR", help="the study directory (the --out of the study's command)")
    args = parser.parse_args(argv)
    try:
        _, text = describe(args.dir)
    except UsageError as exc:
        print(f"maskedbert status: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
