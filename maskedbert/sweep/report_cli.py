"""`maskedbert report DIR`: (re)build a study's tables and plots from its finished cells, saying how many
are missing. Works while cells still run elsewhere (SLURM) and after a partial run.

    maskedbert report runs/rte
"""
from __future__ import annotations

import argparse
import sys

from maskedbert.errors import UsageError

from .study import Study, StudyKinds, load_study


def build_report(study: Study, *, kinds: StudyKinds) -> dict[str, str]:
    """Call the study's reporter (looked up in `kinds`) on its finished cells; returns {artifact: path}.
    UsageError when none is done or the reporter's name is unknown."""
    finished = study.finished()
    if not finished:
        raise UsageError(f"DIR: no cell of {study.dir!r} has finished yet ({len(study.cells)} pending); "
                         f"see `maskedbert status {study.dir}`")
    missing = study.missing()
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        print(f"[report] {len(finished)} of {len(study.cells)} cells finished; {len(missing)} missing ({shown}): "
              f"the tables cover the finished ones only")
    else:
        print(f"[report] all {len(study.cells)} cells finished")
    if not study.reporter:
        raise UsageError(f"DIR: the {study.kind} study in {study.dir!r} names no reporter")
    return kinds.reporter(study.reporter)(study)


def main(argv: list[str] | None = None, *, kinds: StudyKinds) -> int:
    parser = argparse.ArgumentParser(prog="maskedbert report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", metavar="DIR", help="the study directory (the --out of the study's command)")
    args = parser.parse_args(argv)
    try:
        paths = build_report(load_study(args.dir), kinds=kinds)
    except UsageError as exc:
        print(f"maskedbert report: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"[report] {name}: {path}")
    return 0
