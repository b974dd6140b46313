"""The one exception type for mistakes a user can fix (bad flag, missing file, unknown task).

`maskedbert.cli` turns a `UsageError` into a one- or two-line message on stderr and exit status 2,
with no traceback (`MASKEDBERT_DEBUG=1` shows it). Anything else is a bug and keeps its traceback.
Raise it as early as possible - before anything is written to disk.
"""
from __future__ import annotations


class UsageError(ValueError):
    """A user mistake. The message names the argument, what was given and what would work, e.g.
    ``UsageError("--task: unknown task 'nosuchtask'; choose one of: mnli, qqp, rte")``."""
