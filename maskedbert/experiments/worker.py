"""`python -m maskedbert.experiments.worker STUDY_DIR CELL_ID [--log PATH]`: run one cell of a maskedbert
study in this process (the local launcher starts one per cell); names resolve through study_kinds.
Exit status as maskedbert.sweep.worker: 0 done, 1 failed, 3 blocked, 130 interrupted."""
from __future__ import annotations

import sys

from maskedbert.experiments.study_kinds import KINDS
from maskedbert.sweep import worker


def main(argv: list[str] | None = None) -> int:
    return worker.main(argv, kinds=KINDS)


if __name__ == "__main__":
    sys.exit(main())
