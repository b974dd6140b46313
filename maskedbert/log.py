"""Progress and status lines through Python logging (logger "maskedbert"), shown like prints by default.

    from maskedbert.log import status
    status("[sweep] %s: done", cell_id)              # stdout, as print would; a WARNING or above goes to stderr

Library users turn it down or route it like any logger:

    logging.getLogger("maskedbert").setLevel(logging.WARNING)   # progress off, warnings stay
    maskedbert.log.propagate_to_root()                           # your own handlers/format instead of ours

The "maskedbert" logger gets one console handler the first time this module is imported, unless it
already has handlers (the application configured it); it writes the bare message to the *current*
sys.stdout / sys.stderr (so redirection and test capture see it), and does not propagate to the root
logger, so a root handler does not print each line twice. MASKEDBERT_VERBOSITY=warning (or error,
info, debug) sets the level from the environment.
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ["logger", "status", "propagate_to_root", "LOGGER_NAME"]

LOGGER_NAME = "maskedbert"
logger = logging.getLogger(LOGGER_NAME)


class _ConsoleHandler(logging.Handler):
    """The bare message to sys.stdout (below WARNING) or sys.stderr, looked up at each record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def _install_default_handler() -> None:
    if logger.handlers:
        return
    logger.addHandler(_ConsoleHandler())
    logger.propagate = False
    if logger.level == logging.NOTSET:
        name = os.environ.get("MASKEDBERT_VERBOSITY", "info").strip().upper()
        logger.setLevel(getattr(logging, name, logging.INFO) if name in ("DEBUG", "INFO", "WARNING", "ERROR",
                                                                          "CRITICAL") else logging.INFO)


def status(message: str, *args, level: int = logging.INFO) -> None:
    """One progress or status line (%-style `args`, as logging takes them)."""
    logger.log(level, message, *args)


def propagate_to_root() -> None:
    """Drop maskedbert's console handler and let records reach the root logger's handlers."""
    for handler in list(logger.handlers):
        if isinstance(handler, _ConsoleHandler):
            logger.removeHandler(handler)
    logger.propagate = True


_install_default_handler()
