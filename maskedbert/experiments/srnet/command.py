"""`maskedbert srnet`: the command that runs a sparse-and-robust-subnetwork study (Liu et al., NeurIPS
2022) as maskedbert.sweep cells, inline (default), in local workers or as SLURM jobs (docs/SCALING.md).

The flags, the config and its checks are maskedbert/experiments/srnet/options.py (`srnet.build_parser`,
`parse_command_line`, `validate`); what a cell runs and how the report is built is
maskedbert/experiments/srnet/cells.py (`run_cell`, `report_cells`). This module launches
the cells (`cells.srnet_cells`: which cell needs which fine-tuned model) through maskedbert.sweep
(layering: cli -> experiments -> sweep).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from maskedbert._atomic import write_text_atomic
from maskedbert.experiments.cli_common import add_out_arguments, set_interrupt_note, study_out
from maskedbert.experiments.srnet import cells, options as srnet, presets as srnet_presets
from maskedbert.experiments.srnet.config import SRNetConfig
from maskedbert.experiments.study_kinds import KINDS
from maskedbert.sweep.launchers import (add_launcher_arguments, check_launcher, launch as run_cells,
                                        launch_options_from_args)
from maskedbert.sweep.report_cli import build_report
from maskedbert.sweep.study import prepare_study
from maskedbert.log import status as log_status
from maskedbert.study_folder import claim_out_folder

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """srnet's flags plus where the cells run (--launcher, --workers, --gpus, --slurm-*)."""
    parser = srnet.build_parser()
    add_out_arguments(parser)
    add_launcher_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    cfg, args = srnet.parse_command_line(argv, build_parser)
    if args.list_presets:
        print(srnet_presets.presets_table())
        return 0
    srnet.validate(cfg, dry_run=args.dry_run)
    launch = launch_options_from_args(args)  # UsageError naming the flag, before anything is written
    check_launcher(launch)
    set_interrupt_note(lambda: srnet.progress_note(cfg.out))
    from maskedbert.experiments.srnet.pipelines import SRNetRunner  # keeps --help torch-free

    start = time.perf_counter()
    claim_out_folder(cfg.out, cells.KIND, adopt=args.adopt_out, dry_run=True)  # a foreign --out: refused now
    runner = SRNetRunner(cfg)  # loads the data and the model: a mistake there leaves nothing behind
    with study_out(cfg.out, cells.KIND, owned=srnet.RUN_OUTPUTS, fresh=args.fresh, dry_run=args.dry_run,
                   adopt=args.adopt_out, wait=args.wait, prog="maskedbert srnet"):
        runner.check_resumable()
        if args.dry_run:
            path = os.path.join(cfg.out, "config.json")
            write_text_atomic(path, json.dumps(runner.resolved_config(), indent=2, sort_keys=True))
            print(f"dry run: wrote the resolved settings to {path}")
            print(_phases_text(runner.resolved_config()))
            return 0
        return _run_study(cfg, runner, launch, start)


def _phases_text(resolved: dict) -> str:
    """Each pipeline/method's phases (search, ticket fine-tuning, selection), one line each."""
    def show(values: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in values.items())

    lines = [f"dense: {show(resolved['resolved']['dense'])}"]
    for cell, protocol in resolved["protocols"].items():
        for phase, values in protocol["phases"].items():
            lines.append(f"{cell} {phase}: {show(values)}")
    return "\n".join(lines)


def _run_study(cfg: SRNetConfig, runner, launch, start: float) -> int:
    """Every cell of the study through maskedbert.sweep (inline: here, one after another), then the report."""
    resolved = runner.resolved_config()
    title = f"{cfg.model} on {cfg.task}: ID vs OOD ({runner.data.ood_kind})"
    study = prepare_study(cfg.out, kind=cells.KIND, runner=cells.KIND, reporter=cells.KIND,
                                settings=cells.study_settings(cfg), cells=cells.srnet_cells(cfg),
                                info={"title": title, "config": resolved})
    write_text_atomic(os.path.join(cfg.out, "config.json"), json.dumps(resolved, indent=2, sort_keys=True))
    for cell_id in cells.forget_stale_cells(study):
        log_status(f"[srnet] {cell_id}: its cells/ file is gone; it runs again")
    reused = [cell_id for cell_id in study.cells if study.is_done(cell_id)]
    cells.remember_runner(runner)  # inline cells reuse this runner's data, model and caches
    run_cells(study, launch, kinds=KINDS, on_done=_print_cell)
    if launch.launcher == "slurm":
        return 0
    missing = study.missing()
    paths = list(build_report(study, kinds=KINDS).values()) if study.finished() else []
    if reused:
        print(f"{len(reused)} finished cell(s) reused from {cfg.out} (--fresh recomputes them)")
    print(f"done in {time.perf_counter() - start:.1f} s; wrote " + ", ".join(paths))
    if missing:
        log_status(f"[srnet] {len(missing)} of {len(study.cells)} cells did not finish; see `maskedbert status {cfg.out}`")
        return 1
    return 0


def _print_cell(cell_id: str, rows: list[dict]) -> None:
    for row in rows:
        log_status(f"[srnet] {cell_id}: {row['pipeline']} {row['method']} {row['loss']} s{row['sparsity']:.2f}: "
              f"ID acc {row['id_accuracy']:.4f}  OOD acc {row['ood_accuracy']:.4f}")
    if not rows:
        log_status(f"[srnet] {cell_id}: done (no rows)")
