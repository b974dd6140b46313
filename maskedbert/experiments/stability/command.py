"""`maskedbert stability`: the command that launches a many-seed fine-tuning stability study (Mosbach
et al., ICLR 2021) as maskedbert.sweep cells, one per (configuration, seed), in <out>/<configuration>/seed_<s>/.

Which cells a study has, what one run does and how the tables are built is
maskedbert/experiments/stability/cells.py (`study_cells`, its runner `run_cell` and reporter
`report_cells`); this module hands the cells to a launcher (inline, local workers, SLURM) through
maskedbert.sweep (layering: cli -> experiments -> sweep).
The experiment module's docstring is this command's --help text.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Any

from maskedbert import sweep
from maskedbert.errors import UsageError
from maskedbert.experiments.cli_common import HelpFormatter
from maskedbert.experiments.finetune import write_json
from maskedbert.experiments.stability import cells as stability
from maskedbert.experiments.stability.cells import study_cells
from maskedbert.experiments.stability.presets import PRESETS, presets_table, resolve_study, show_preset
from maskedbert.experiments.study_kinds import KINDS
from maskedbert.help_text import default_text
from maskedbert.sweep import load_study
from maskedbert.sweep.launchers import add_launcher_arguments, launch_options_from_args
from maskedbert.sweep.report_cli import build_report
from maskedbert.train.reporting import add_report_to_argument

__all__ = ["build_parser", "main", "run_study"]

_DESCRIPTION = "`maskedbert stability`: many-seed fine-tuning stability study (Mosbach et al., ICLR 2021)."


def _parse_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_study(study: dict[str, Any], out: str, *, launch=None, parallel: int | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run (or read back) every run of `study` under `out`; returns one result dict per finished run.

    `launch`: a maskedbert.sweep.LaunchOptions (default inline); `parallel=N` is short for the local
    launcher with N workers. With the slurm launcher this returns after submitting (finished runs only).
    """
    if launch is None:
        if parallel is not None and parallel < 1:
            raise UsageError(f"parallel: expected >= 1, got {parallel}")
        launch = sweep.LaunchOptions(launcher="local" if (parallel or 1) > 1 else "inline",
                                     workers=parallel if (parallel or 1) > 1 else None, progress=progress)
    sweep.check_launcher(launch)
    cells = study_cells(study)
    sweep_study = sweep.prepare_study(out, kind=stability.KIND, runner=stability.KIND, reporter=stability.KIND,
                                      info=study, settings={k: study[k] for k in ("base", "configurations")},
                                      cells=cells)
    write_json(os.path.join(out, "study_config.json"), study)
    sweep.launch(sweep_study, launch, kinds=KINDS, on_done=lambda cell_id, result: stability.print_run(
        (sweep_study.cells[cell_id].spec["configuration"], result["seed"]), result))
    return stability.finished_results(sweep_study)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskedbert stability", description=_DESCRIPTION,
                                formatter_class=HelpFormatter)
    p.add_argument("--preset", default="synthetic-minilm", help="see --list-presets")
    p.add_argument("--list-presets", action="store_true", help="a table of each preset's key hyperparameters")
    p.add_argument("--show-preset", metavar="NAME", choices=sorted(PRESETS),
                   help="print preset NAME's resolved settings as JSON and exit")
    default_text(p.add_argument("--out", help="study directory"), "runs/stability-<preset>")
    default_text(p.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3"), "the preset's")
    p.add_argument("--num-seeds", type=int, help="seeds 1..N")
    p.add_argument("--configurations", help="comma-separated subset of the preset's configurations")
    p.add_argument("--data-dir", help="directory of the task's original files (else the hub)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a finetune setting for every run, e.g. --set num_epochs=5")
    p.add_argument("--parallel", type=int, help="N runs at once: short for --launcher local --workers N")
    p.add_argument("--no-progress", action="store_true")
    add_report_to_argument(p)  # every run's scalars also to TensorBoard or W&B (a finetune setting)
    add_launcher_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        print(presets_table())
        return 0
    if args.show_preset:
        print(show_preset(args.show_preset))
        return 0
    try:
        seeds = None
        if args.seeds and args.num_seeds:
            raise ValueError("give --seeds or --num-seeds, not both")
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        elif args.num_seeds:
            if args.num_seeds < 1:
                raise ValueError(f"--num-seeds must be >= 1, got {args.num_seeds}")
            seeds = list(range(1, args.num_seeds + 1))
        overrides = {}
        for item in args.set:
            if "=" not in item:
                raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            overrides[key.strip()] = _parse_value(value.strip())
        if args.report_to is not None:
            overrides["report_to"] = args.report_to
        configurations = args.configurations.split(",") if args.configurations else None
        study = resolve_study(args.preset, seeds=seeds, overrides=overrides, configurations=configurations,
                              data_dir=args.data_dir)
    except (TypeError, ValueError) as exc:
        print(f"maskedbert stability: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"stability-{args.preset}")
    try:
        launch = launch_options_from_args(args, progress=not args.no_progress)
        results = run_study(study, out, launch=launch)
    except UsageError as exc:
        print(f"maskedbert stability: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskedbert stability: interrupted; finished runs are kept, rerun the same command to resume",
              file=sys.stderr)
        return 130
    sweep_study = load_study(out)
    if launch.launcher == "slurm":
        return 0
    missing = sweep_study.missing()
    if results:
        paths = build_report(sweep_study, kinds=KINDS)
        print(f"[stability] results in {paths['markdown']}")
    if missing:
        print(f"[stability] {len(missing)} of {len(sweep_study.cells)} runs did not finish; "
              f"see `maskedbert status {out}`", file=sys.stderr)
        return 1
    return 0
