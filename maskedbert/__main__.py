"""`python -m maskedbert <command> ...`: the same as the `maskedbert` command."""
import sys

from maskedbert.cli import main

sys.exit(main())
