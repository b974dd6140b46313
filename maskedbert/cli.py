"""`maskedbert <command> [options]`: a thin dispatcher over the experiment modules.

Each command lives in its own module with a `main(argv) -> int` that parses its own options, so
`maskedbert <command> --help` shows that command's flags and importing the CLI stays cheap.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module, one-line description)
COMMANDS = {
    "demo": ("maskedbert.experiments.demo", "offline CPU demo: sparse and robust subnetworks on a synthetic NLI task"),
    "example": ("maskedbert.experiments.example", "a small masked-layer example: train mask scores of one layer"),
    "finetune": ("maskedbert.experiments.finetune", "fine-tune one model on one task"),
    "stability": ("maskedbert.experiments.stability", "many-seed fine-tuning stability study (Mosbach et al.)"),
    "srnet": ("maskedbert.experiments.srnet", "sparse and robust subnetworks: IMP, mask training, debiasing (Liu et al.)"),
    "status": ("maskedbert.sweep.status_cli", "where each run of a study stands: done, running, failed, pending"),
    "report": ("maskedbert.sweep.report_cli", "rebuild a study's tables and plots from its finished runs"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: maskedbert <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `maskedbert <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"maskedbert: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"maskedbert: command {command!r} is not available in this version", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
