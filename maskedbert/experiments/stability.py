"""`maskedbert stability`: many-seed fine-tuning stability study (Mosbach et al., ICLR 2021).

    maskedbert stability --list-presets
    maskedbert stability --preset synthetic-minilm --out runs/stability-demo     # offline CPU, minutes
    maskedbert stability --preset tiny --out /tmp/s --seeds 1,2,3 --set num_epochs=1 --set lr=1e-3
    maskedbert stability --preset mosbach-rte-bert --data-dir glue_data/RTE --out runs/rte \
        --launcher local --gpus 0,1 --runs-per-gpu 2          # 4 runs at once on 2 GPUs
    maskedbert stability --preset mosbach-rte-bert --data-dir glue_data/RTE --out runs/rte \
        --launcher slurm --slurm-partition gpu --slurm-gpus-per-task 1 --slurm-time 4:00:00
    maskedbert status runs/rte; maskedbert report runs/rte

A study runs every (configuration, seed) pair of a preset through `finetune.run_finetune` in
<out>/<configuration>/seed_<s>/, then writes to <out>: study_config.json (the resolved settings),
runs.csv, summary.csv and results.md (per-seed final and best dev metric; per configuration the
mean, std (ddof=1), min, max and the failed-run rate, a run failing when its final dev metric is at
or below the majority-class baseline) and three PNG plots (metric box plot, per-layer gradient norms
of failed vs successful runs, training loss vs dev metric). Rerunning the same command resumes:
finished seeds are read back, not rerun, and an interrupted seed continues from its checkpoint.
Each run is a cell of a maskedbert.sweep study (<out>/sweep.json), so it can run inline (default),
in local worker processes or as a SLURM job (--launcher; docs/SCALING.md); `maskedbert report <out>`
rebuilds the tables from the finished runs (--parallel N is short for --launcher local --workers N).

Presets follow the paper: "bert-recipe-<task>-<model>" is BERT's original recipe (3 epochs, Adam
without bias correction, eps 1e-6, weight decay 0.01, 10% warmup then linear decay, batch 16,
lr in {1,2,3}e-5); "mosbach-<task>-<model>" is the proposed baseline (bias correction on, 20 epochs,
lr 2e-5, 10% warmup, 3 evaluations per epoch); tasks rte, mrpc, cola; models bert
(bert-large-uncased), roberta (roberta-large), albert (albert-large-v2); 25 seeds each.
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
import io
import math
import os
import statistics
import sys
from typing import Any

from .finetune import FinetuneConfig, run_finetune, write_json
from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError
from maskedbert.sweep.launchers import add_launcher_arguments, launch_options_from_args

__all__ = ["PRESETS", "resolve_study", "run_study", "summarize", "write_reports", "main", "run_cell",
           "report_cells", "study_cells"]

PAPER_MODELS = {"bert": "bert-large-uncased", "roberta": "roberta-large", "albert": "albert-large-v2"}
PAPER_SEEDS = list(range(1, 26))
_COMMON = dict(batch_size=16, max_length=128, adam_eps=1e-6, weight_decay=0.01, warmup_ratio=0.1,
               max_grad_norm=1.0, schedule="linear")


def _paper_presets() -> dict[str, dict[str, Any]]:
    presets = {}
    for task in ("rte", "mrpc", "cola"):
        for key, model in PAPER_MODELS.items():
            presets[f"bert-recipe-{task}-{key}"] = {
                "description": f"BERT's original recipe on {task.upper()} with {model} (Devlin et al.)",
                "base": dict(_COMMON, model=model, task=task, num_epochs=3.0, correct_bias=False),
                "configurations": {f"lr{lr:g}": {"lr": lr} for lr in (1e-5, 2e-5, 3e-5)},
                "seeds": PAPER_SEEDS,
            }
            presets[f"mosbach-{task}-{key}"] = {
                "description": f"Mosbach et al.'s stable baseline on {task.upper()} with {model}",
                "base": dict(_COMMON, model=model, task=task, num_epochs=20.0, lr=2e-5, correct_bias=True,
                             evals_per_epoch=3),
                "configurations": {"mosbach": {}},
                "seeds": PAPER_SEEDS,
            }
    presets["synthetic-minilm"] = {
        "description": "offline CPU demo (~2 min): pretrained MiniLM on the synthetic NLI task, "
                       "Adam with vs without bias correction",
        # 256 examples x 2 epochs = 32 steps per run, 6 runs: ~2 minutes on this 2-core CPU when idle.
        # synthetic-nli, not synthetic-pair: MiniLM learns it within 32 steps (0.93 dev accuracy, seed 0),
        # while synthetic-pair needs ~150+ steps to leave the majority class (see synthetic-pair-minilm)
        "base": dict(model="offline-minilm", task="synthetic-nli", train_limit=256, dev_limit=200, max_length=40,
                     num_epochs=2.0, lr=1e-4, batch_size=16, adam_eps=1e-6, weight_decay=0.01,
                     warmup_ratio=0.1, max_grad_norm=1.0, evals_per_epoch=1, log_every=2),
        "configurations": {"bias-correction": {"correct_bias": True},
                           "no-bias-correction": {"correct_bias": False}},
        "seeds": [1, 2, 3],
    }
    presets["synthetic-pair-minilm"] = {
        "description": "offline CPU (~10 min): pretrained MiniLM on the RTE-sized synthetic pair task, which "
                       "is slow to start; short training without bias correction vs Mosbach et al.'s "
                       "longer training with bias correction",
        # MiniLM sat at the majority class for ~150 steps at lr 5e-5, batch 32 (synthetic.py docstring):
        # 3 epochs of 1024 examples (96 steps) vs 10 epochs (320 steps) straddle that. Measured
        # 2026-11-23 (CPU, 16 min): short/no correction failed 3/3 (majority class, gradient norms of
        # every layer falling to ~1e-3..1e-2); long/with correction 0/3 failed, accuracy 0.746 +- 0.018.
        # The two configurations change length and bias correction together, as the paper's recipe does.
        "base": dict(model="offline-minilm", task="synthetic-pair", train_limit=1024, max_length=48,
                     lr=5e-5, batch_size=32, adam_eps=1e-6, weight_decay=0.01, warmup_ratio=0.1,
                     max_grad_norm=1.0, evals_per_epoch=1, log_every=4),
        "configurations": {"short-no-bias-correction": {"num_epochs": 3.0, "correct_bias": False},
                           "long-bias-correction": {"num_epochs": 10.0, "correct_bias": True}},
        "seeds": [1, 2, 3],
    }
    presets["tiny"] = {
        "description": "seconds: random tiny BERT on a slice of the synthetic pair task (tests, smoke runs)",
        "base": dict(model="tiny-bert", task="synthetic-pair", train_limit=128, dev_limit=64, max_length=32,
                     num_epochs=2.0, lr=1e-3, batch_size=16, warmup_ratio=0.1, evals_per_epoch=2, log_every=2),
        "configurations": {"default": {}},
        "seeds": [1, 2, 3],
    }
    return presets


PRESETS = _paper_presets()


def _parse_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolve_study(preset: str, *, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None,
                  configurations: list[str] | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """The full study settings: preset + overrides (applied to every configuration)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    study = copy.deepcopy(PRESETS[preset])
    study["preset"] = preset
    study["base"].update(overrides or {})
    if data_dir is not None:
        study["base"]["data_dir"] = data_dir
    if seeds is not None:
        study["seeds"] = list(seeds)
    if configurations:
        unknown = sorted(set(configurations) - set(study["configurations"]))
        if unknown:
            raise ValueError(f"configurations {unknown} not in preset {preset!r}: {sorted(study['configurations'])}")
        study["configurations"] = {k: v for k, v in study["configurations"].items() if k in configurations}
    for name, extra in study["configurations"].items():  # fail now on unknown settings, not mid-study
        FinetuneConfig.from_dict({**study["base"], **extra})
    return study


# ---- the study as sweep cells: one per (configuration, seed), in <out>/<configuration>/seed_<s>/ ----------
RUNNER = "maskedbert.experiments.stability:run_cell"
REPORTER = "maskedbert.experiments.stability:report_cells"


def study_cells(study: dict[str, Any]) -> list:
    from maskedbert.sweep import Cell

    cells = []
    for name in study["configurations"]:
        for seed in study["seeds"]:
            values = {**study["base"], **study["configurations"][name], "seed": seed}
            cells.append(Cell(f"{name}/seed_{seed}", {"configuration": name, "finetune": values}))
    return cells


def run_cell(spec: dict[str, Any], cell_dir: str, *, progress: bool = False) -> dict[str, Any]:
    """One run of the study (the sweep runner): fine-tune in `cell_dir`, resuming from its checkpoint."""
    config = FinetuneConfig.from_dict({**spec["finetune"], "output_dir": cell_dir, "progress": progress})
    return run_finetune(config)


def _results(sweep_study) -> list[dict[str, Any]]:
    return [dict(result, configuration=cell.spec["configuration"], run_dir=sweep_study.cell_dir(cell.id))
            for cell, result in sweep_study.finished()]


def report_cells(sweep_study) -> dict[str, str]:
    """The sweep reporter: tables and plots from the finished cells (configurations with none are left out)."""
    results = _results(sweep_study)
    study = dict(sweep_study.info)
    present = dict.fromkeys(r["configuration"] for r in results)
    study["configurations"] = {k: v for k, v in study["configurations"].items() if k in present}
    paths = write_reports(results, sweep_study.dir, study)
    for row in summarize(results):
        print(f"[stability] {row['configuration']}: final {row['metric']} mean {_fmt(row['final_mean'])} "
              f"std {_fmt(row['final_std'])} min {_fmt(row['final_min'])} max {_fmt(row['final_max'])}; "
              f"failed {row['failed']}/{row['runs']}")
    return paths


def run_study(study: dict[str, Any], out: str, *, launch=None, parallel: int | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run (or read back) every run of `study` under `out`; returns one result dict per finished run.

    `launch`: a maskedbert.sweep.LaunchOptions (default inline); `parallel=N` is short for the local
    launcher with N workers. With the slurm launcher this returns after submitting (finished runs only).
    """
    from maskedbert import sweep

    if launch is None:
        if parallel is not None and parallel < 1:
            raise UsageError(f"parallel: expected >= 1, got {parallel}")
        launch = sweep.LaunchOptions(launcher="local" if (parallel or 1) > 1 else "inline",
                                     workers=parallel if (parallel or 1) > 1 else None, progress=progress)
    sweep.check_launcher(launch)
    cells = study_cells(study)
    sweep_study = sweep.prepare_study(out, kind="stability", runner=RUNNER, reporter=REPORTER, info=study,
                                      settings={k: study[k] for k in ("base", "configurations")}, cells=cells)
    write_json(os.path.join(out, "study_config.json"), study)
    sweep.launch(sweep_study, launch, on_done=lambda cell_id, result: _print_run(
        (sweep_study.cells[cell_id].spec["configuration"], result["seed"]), result))
    return _results(sweep_study)


def _print_run(job, result) -> None:
    status = "diverged" if result.get("diverged") else ("FAILED" if result["failed"] else "ok")
    print(f"[stability] {job[0]} seed {job[1]}: final {result['metric']} {_fmt(result['final_metric'])}, "
          f"best {_fmt(result['best_metric'])} (baseline {_fmt(result['majority_baseline'])}) {status}")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _stats(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: n, final/best mean, std, min, max, failed-run count and rate."""
    rows = []
    for name in dict.fromkeys(r["configuration"] for r in results):
        runs = [r for r in results if r["configuration"] == name]
        final, best = _stats([r["final_metric"] for r in runs]), _stats([r["best_metric"] for r in runs])
        failed = sum(bool(r["failed"]) for r in runs)
        rows.append({"configuration": name, "runs": len(runs), "metric": runs[0]["metric"],
                     **{f"final_{k}": v for k, v in final.items()}, **{f"best_{k}": v for k, v in best.items()},
                     "failed": failed, "failed_rate": failed / len(runs),
                     "majority_baseline": runs[0]["majority_baseline"]})
    return rows


_RUN_COLUMNS = ("configuration", "seed", "final_metric", "best_metric", "best_step", "steps", "majority_baseline",
                "failed", "diverged")


def _csv_text(rows: list[dict[str, Any]], columns) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown(rows: list[dict[str, Any]], columns) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _write_text(path: str, text: str) -> None:
    write_text_atomic(path, text)


def write_reports(results: list[dict[str, Any]], out: str, study: dict[str, Any]) -> dict[str, str]:
    """Tables (CSV, Markdown) and plots for a finished study; returns {artifact: path}."""
    from . import plots
    from maskedbert.train.runlog import read_jsonl

    summary = summarize(results)
    summary_columns = list(summary[0])
    paths = {"runs_csv": os.path.join(out, "runs.csv"), "summary_csv": os.path.join(out, "summary.csv"),
             "markdown": os.path.join(out, "results.md")}
    _write_text(paths["runs_csv"], _csv_text(results, _RUN_COLUMNS))
    _write_text(paths["summary_csv"], _csv_text(summary, summary_columns))
    metric = results[0]["metric"]
    markdown = [f"# Stability study: {study['preset']}", "", study.get("description", ""), "",
                f"Dev metric: {metric}. A run fails when its final dev metric is at or below the majority-class "
                f"baseline. std is the sample standard deviation.", "", "## Per configuration", "",
                _markdown(summary, summary_columns), "", "## Per run", "", _markdown(results, _RUN_COLUMNS), ""]
    _write_text(paths["markdown"], "\n".join(markdown))
    baseline = results[0]["majority_baseline"]
    logs = []
    for r in results:
        log_path = os.path.join(r["run_dir"], "log.jsonl")
        logs.append(read_jsonl(log_path) if os.path.exists(log_path) else [])
    paths["box_plot"] = plots.box_plot(
        {name: [r["final_metric"] for r in results if r["configuration"] == name]
         for name in study["configurations"]},
        os.path.join(out, "metric_distribution.png"), ylabel=f"final dev {metric}", baseline=baseline)
    try:
        paths["grad_norms"] = plots.grad_norm_plot([(log, r["failed"]) for log, r in zip(logs, results)],
                                                   os.path.join(out, "grad_norms.png"))
    except ValueError as exc:
        print(f"[stability] no gradient-norm plot: {exc}", file=sys.stderr)
    paths["loss_vs_metric"] = plots.loss_vs_metric_plot(
        [(log, r["failed"], r["final_metric"]) for log, r in zip(logs, results)],
        os.path.join(out, "loss_vs_metric.png"), metric, baseline)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskedbert stability", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="synthetic-minilm", help="see --list-presets (default synthetic-minilm)")
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--out", help="study directory (default runs/stability-<preset>)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3 (default: the preset's)")
    p.add_argument("--num-seeds", type=int, help="seeds 1..N")
    p.add_argument("--configurations", help="comma-separated subset of the preset's configurations")
    p.add_argument("--data-dir", help="directory of the task's original files (else the hub)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a finetune setting for every run, e.g. --set num_epochs=5")
    p.add_argument("--parallel", type=int, help="N runs at once: short for --launcher local --workers N")
    p.add_argument("--no-progress", action="store_true")
    add_launcher_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:28s} {preset['description']}")
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
    from maskedbert.sweep import load_study
    from maskedbert.sweep.report_cli import build_report

    sweep_study = load_study(out)
    if launch.launcher == "slurm":
        return 0
    missing = sweep_study.missing()
    if results:
        paths = build_report(sweep_study)
        print(f"[stability] results in {paths['markdown']}")
    if missing:
        print(f"[stability] {len(missing)} of {len(sweep_study.cells)} runs did not finish; "
              f"see `maskedbert status {out}`", file=sys.stderr)
        return 1
    return 0
