"""`maskedbert <command> [options]`: a thin dispatcher over the experiment modules.

Each command lives in its own module with a `main(argv) -> int` that parses its own options, so
`maskedbert <command> --help` shows that command's flags and importing the CLI stays cheap.

How a command ends, the same for all of them:
- `maskedbert.errors.UsageError` (a mistake the user can fix): "maskedbert <command>: error: <message>"
  on stderr, exit status 2, no traceback. argparse's own errors also exit with 2.
- Ctrl-C: one line saying what finished and how to resume (the text a command registered with
  `maskedbert.experiments.cli_common.set_interrupt_note`), exit status 130, no traceback.
- The disk, quota or permissions refuse a file (ENOSPC, EDQUOT, EFBIG, EACCES, EROFS, EPERM,
  ENAMETOOLONG): one line naming the file and the reason, exit status 1, no traceback. What was
  written before stays whole (every file is written to a temporary and renamed), so rerunning the
  command once there is room continues.
- Any other exception is a bug: its traceback, then a line saying so and where to report it; exit 1.
- A closed pipe on stdout (`maskedbert ... | head`): quiet, exit status 141 (128 + SIGPIPE), as a shell
  tool would end.
- MASKEDBERT_DEBUG=1 adds the full traceback to the first two as well.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from importlib import metadata

from maskedbert import __version__
from maskedbert._atomic import is_write_error
from maskedbert.errors import UsageError
from maskedbert.experiments import cli_common

# command -> (module, one-line description)
COMMANDS = {
    "demo": ("maskedbert.experiments.demo", "offline CPU demo: sparse and robust subnetworks on a synthetic NLI task"),
    "example": ("maskedbert.experiments.example", "a small masked-layer example: train mask scores of one layer"),
    "finetune": ("maskedbert.experiments.finetune", "fine-tune one model on one task"),
    "stability": ("maskedbert.experiments.stability.command", "many-seed fine-tuning stability study (Mosbach et al.)"),
    "srnet": ("maskedbert.experiments.srnet.command", "sparse and robust subnetworks: IMP, mask training, debiasing (Liu et al.)"),
    "status": ("maskedbert.sweep.status_cli", "where each run of a study stands: done, running, failed, pending"),
    "report": ("maskedbert.experiments.report", "rebuild a study's tables and plots from its finished runs"),
    "convert-probs": ("maskedbert.experiments.convert_probs", "bias-model predictions (.pkl, .npy) -> JSONL of probabilities by id"),
}
# where internal errors are to be reported (the project's issue tracker)
BUG_REPORTS = "the maskedbert issue tracker"
DEBUG_VARIABLE = "MASKEDBERT_DEBUG"
EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 1, 130, 141
EXIT_FILESYSTEM = 1


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: maskedbert <command> [options]", "       maskedbert --version", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `maskedbert <command> --help` for a command's options (each shows its default).",
              f"{DEBUG_VARIABLE}=1 shows full tracebacks for errors and interrupts."]
    return "\n".join(lines)


def version_text() -> str:
    """maskedbert's version and those of the libraries a bug report needs (read from metadata: no imports)."""
    parts = []
    for package in ("torch", "triton", "transformers", "datasets"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} not installed")
    python = ".".join(map(str, sys.version_info[:3]))
    return f"maskedbert {__version__} ({', '.join(parts)}; python {python})"


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _run(command: str, argv: list[str]) -> int:
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"maskedbert: command {command!r} is not available in this version", file=sys.stderr)
            return EXIT_USAGE
        raise
    return int(module.main(argv) or 0)


def _quiet_closed_stdout() -> int:
    """The reader of stdout went away: drop what is still buffered (flushing it at exit would raise again)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_closed_stdout()


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(version_text())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"maskedbert: error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}\n\n{_usage()}",
              file=sys.stderr)
        return EXIT_USAGE
    prog = f"maskedbert {command}"
    cli_common.set_interrupt_note(None)
    try:
        return _run(command, rest)
    except UsageError as exc:
        if _debug():
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        if _debug():
            traceback.print_exc()
        note = cli_common.interrupt_note() or "nothing to resume was reported"
        print(f"\n{prog}: interrupted; {note}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if not is_write_error(exc) or exc.filename is None:
            _report_bug(prog)
            return EXIT_BUG
        if _debug():
            traceback.print_exc()
        where = exc.filename if isinstance(exc.filename, str) else os.fsdecode(exc.filename)
        print(f"{prog}: error: cannot write {where}: {exc.strerror or os.strerror(exc.errno)}", file=sys.stderr)
        return EXIT_FILESYSTEM
    except Exception:
        _report_bug(prog)
        return EXIT_BUG
    finally:
        cli_common.set_interrupt_note(None)


def _report_bug(prog: str) -> None:
    traceback.print_exc()
    print(f"{prog}: internal error: this is a bug in maskedbert, not a mistake in your command. Please report "
          f"it to {BUG_REPORTS} with the command line, the traceback above and `maskedbert --version` "
          f"({version_text()})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
