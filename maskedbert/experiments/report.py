"""`maskedbert report DIR`: maskedbert.sweep's report command over the studies study_kinds knows."""
from __future__ import annotations

import sys

from maskedbert.experiments.study_kinds import KINDS
from maskedbert.sweep import report_cli


def main(argv: list[str] | None = None) -> int:
    return report_cli.main(argv, kinds=KINDS)


if __name__ == "__main__":
    sys.exit(main())
