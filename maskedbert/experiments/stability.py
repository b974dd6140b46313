"""`maskedbert stability`: many-seed fine-tuning stability study (Mosbach et al., ICLR 2021).

    maskedbert stability --list-presets
    maskedbert stability --preset synthetic-minilm --out runs/stability-demo     # offline CPU, minutes
    maskedbert stability --preset mosbach-rte-bert --data-dir glue_data/RTE --out runs/rte --parallel 2
    maskedbert stability --preset tiny --out /tmp/s --seeds 1,2,3 --set num_epochs=1 --set lr=1e-3

A study runs every (configuration, seed) pair of a preset through `finetune.run_finetune` in
<out>/<configuration>/seed_<s>/, then writes to <out>: study_config.json (the resolved settings),
runs.csv, summary.csv and results.md and three PNG plots (metric box plot, per-layer gradient norms
of failed vs successful runs, training loss vs dev metric). The tables read every run twice: the
last model (final_*; a run fails when its final dev metric is at or below the majority-class
baseline, the paper's rule) and the best dev checkpoint by the task's selection metric (best_*;
MRPC: acc_and_f1, as the reference's early stopping); per configuration the mean, std (ddof=1),
min, max and failed-run rate of each. Rerunning the same command resumes: finished seeds are read
back, not rerun, and an interrupted seed continues from its checkpoint.

Presets (stability_presets.py, `--list-presets`, `--show-preset NAME`) hold the paper's settings as
the reference code's configurations: "bert-recipe-<task>-<model>" is BERT's original recipe (3 epochs,
Adam without bias correction, lr in {1,2,3}e-5); "mosbach-<task>-<model>" the proposed baseline
(bias correction, 20 epochs, lr 2e-5, 10% warmup, 3 evaluations per epoch); per model its weight
decay, Adam beta2, clipping and dropout; tasks rte, mrpc, cola; models bert (bert-large-uncased),
roberta (roberta-large), albert (albert-large-v2); 25 seeds each.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
import statistics
import sys
from typing import Any

from .finetune import FinetuneConfig, run_finetune, write_json
from .stability_presets import PRESETS, presets_table, resolve_study, show_preset
from maskedbert._atomic import write_text_atomic

__all__ = ["PRESETS", "resolve_study", "run_study", "run_rows", "summarize", "write_reports", "main"]


def _parse_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _run_config(study: dict[str, Any], out: str, name: str, seed: int, progress: bool) -> FinetuneConfig:
    values = {**study["base"], **study["configurations"][name], "seed": seed,
              "output_dir": os.path.join(out, name, f"seed_{seed}"), "progress": progress}
    return FinetuneConfig.from_dict(values)


def _run_in_worker(config_dict: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return run_finetune(FinetuneConfig(**config_dict))


def run_study(study: dict[str, Any], out: str, *, parallel: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or read back) every run of `study` under `out`; returns one result dict per run."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    os.makedirs(out, exist_ok=True)
    config_path = os.path.join(out, "study_config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        if {k: previous.get(k) for k in ("base", "configurations")} != {k: study[k] for k in ("base", "configurations")}:
            raise ValueError(f"{out} holds a study with other settings ({config_path}); use another --out")
    write_json(config_path, study)
    jobs = [(name, seed) for name in study["configurations"] for seed in study["seeds"]]
    configs = {job: _run_config(study, out, *job, progress=progress and parallel == 1) for job in jobs}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    pending = []
    for job, config in configs.items():
        result_path = os.path.join(config.output_dir, "result.json")
        if os.path.exists(result_path):
            with open(result_path) as f:
                results[job] = json.load(f)
            print(f"[stability] {job[0]} seed {job[1]}: finished earlier, not rerun")
        else:
            pending.append(job)
    if parallel == 1:
        for job in pending:
            results[job] = run_finetune(configs[job])
            _print_run(job, results[job])
    else:
        threads = max(1, (os.cpu_count() or 1) // parallel)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
            futures = {pool.submit(_run_in_worker, dataclasses.asdict(configs[job]), threads): job for job in pending}
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                results[job] = future.result()
                _print_run(job, results[job])
    return [dict(results[job], configuration=job[0], run_dir=configs[job].output_dir) for job in jobs]


def _print_run(job, result) -> None:
    row = _run_row(result)
    status = "diverged" if row["diverged"] else ("FAILED" if row["failed"] else "ok")
    print(f"[stability] {job[0]} seed {job[1]}: final {row['metric']} {_fmt(row['final_metric'])}, "
          f"best checkpoint (by {row['selection_metric']}, step {_fmt(row['best_step'])}) "
          f"{_fmt(row['best_checkpoint_metric'])} (baseline {_fmt(row['majority_baseline'])}) {status}")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _stats(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def _run_row(result: dict[str, Any]) -> dict[str, Any]:
    """One run's result with its last-model and best-checkpoint columns.

    The best checkpoint is the evaluation with the highest `selection_metric` (result["best_metric"]
    holds that value); best_checkpoint_metric is the task's metric at that checkpoint, so it compares
    with final_metric, and best_failed applies the failed-run rule to it.
    """
    metric = result["metric"]
    selection = result.get("selection_metric") or metric  # results written before selection_metric existed
    at_best = (result.get("best_metrics") or {}).get(metric)
    if at_best is None and selection == metric:
        at_best = result.get("best_metric")
    baseline = result["majority_baseline"]
    return {**result, "selection_metric": selection, "best_selection": result.get("best_metric"),
            "best_checkpoint_metric": at_best, "best_failed": at_best is None or at_best <= baseline,
            "diverged": bool(result.get("diverged"))}


def run_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: the last model (final_metric, failed) and the best dev checkpoint (see `_run_row`)."""
    return [_run_row(r) for r in results]


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: the last model's and the best checkpoint's mean, std, min, max and failed runs.

    final_*: the task's dev metric of the last model; failed: runs at or below the majority baseline
    (Mosbach et al.'s failed-run rule). best_*: the task's dev metric at each run's best checkpoint by
    the selection metric (best_selection_mean: that metric's own mean); best_failed: the same rule there.
    """
    rows = []
    runs_of = run_rows(results)
    for name in dict.fromkeys(r["configuration"] for r in runs_of):
        runs = [r for r in runs_of if r["configuration"] == name]
        final, best = _stats([r["final_metric"] for r in runs]), _stats([r["best_checkpoint_metric"] for r in runs])
        failed, best_failed = sum(bool(r["failed"]) for r in runs), sum(r["best_failed"] for r in runs)
        rows.append({"configuration": name, "runs": len(runs), "metric": runs[0]["metric"],
                     "majority_baseline": runs[0]["majority_baseline"],
                     **{f"final_{k}": v for k, v in final.items()},
                     "failed": failed, "failed_rate": failed / len(runs),
                     "selection_metric": runs[0]["selection_metric"],
                     **{f"best_{k}": v for k, v in best.items()},
                     "best_failed": best_failed, "best_failed_rate": best_failed / len(runs),
                     "best_selection_mean": _stats([r["best_selection"] for r in runs])["mean"],
                     "diverged": sum(r["diverged"] for r in runs)})
    return rows


_RUN_COLUMNS = ("configuration", "seed", "steps", "majority_baseline", "final_metric", "failed", "diverged",
                "selection_metric", "best_step", "best_selection", "best_checkpoint_metric", "best_failed")


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


def _reading_guide(metric: str, selection: str, baseline: float) -> str:
    return (f"Two readings of every run. **Last model** (final_*, failed): the dev {metric} after the last "
            f"step; a run fails when it is at or below the majority-class baseline ({_fmt(baseline)}), the "
            f"paper's failed-run rule. **Best checkpoint** (best_*): the evaluation with the highest dev "
            f"{selection} (ties: the earlier step), the checkpoint the reference code's early stopping keeps; "
            f"best_* columns hold the dev {metric} of that checkpoint and best_failed applies the same rule to "
            f"it. std is the sample standard deviation.")


def write_reports(results: list[dict[str, Any]], out: str, study: dict[str, Any]) -> dict[str, str]:
    """Tables (CSV, Markdown) and plots for a finished study; returns {artifact: path}."""
    from . import plots
    from maskedbert.train.runlog import read_jsonl

    rows = run_rows(results)
    summary = summarize(results)
    summary_columns = list(summary[0])
    paths = {"runs_csv": os.path.join(out, "runs.csv"), "summary_csv": os.path.join(out, "summary.csv"),
             "markdown": os.path.join(out, "results.md")}
    _write_text(paths["runs_csv"], _csv_text(rows, _RUN_COLUMNS))
    _write_text(paths["summary_csv"], _csv_text(summary, summary_columns))
    metric, baseline = rows[0]["metric"], rows[0]["majority_baseline"]
    markdown = [f"# Stability study: {study['preset']}", "", study.get("description", ""), "",
                _reading_guide(metric, rows[0]["selection_metric"], baseline), "", "## Per configuration", "",
                _markdown(summary, summary_columns), "", "## Per run", "", _markdown(rows, _RUN_COLUMNS), ""]
    _write_text(paths["markdown"], "\n".join(markdown))
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
    p.add_argument("--list-presets", action="store_true", help="a table of each preset's key hyperparameters")
    p.add_argument("--show-preset", metavar="NAME", choices=sorted(PRESETS),
                   help="print preset NAME's resolved settings as JSON and exit")
    p.add_argument("--out", help="study directory (default runs/stability-<preset>)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3 (default: the preset's)")
    p.add_argument("--num-seeds", type=int, help="seeds 1..N")
    p.add_argument("--configurations", help="comma-separated subset of the preset's configurations")
    p.add_argument("--data-dir", help="directory of the task's original files (else the hub)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a finetune setting for every run, e.g. --set num_epochs=5")
    p.add_argument("--parallel", type=int, default=1, help="runs at once (separate processes)")
    p.add_argument("--no-progress", action="store_true")
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
        configurations = args.configurations.split(",") if args.configurations else None
        study = resolve_study(args.preset, seeds=seeds, overrides=overrides, configurations=configurations,
                              data_dir=args.data_dir)
    except (TypeError, ValueError) as exc:
        print(f"maskedbert stability: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"stability-{args.preset}")
    results = run_study(study, out, parallel=args.parallel, progress=not args.no_progress)
    paths = write_reports(results, out, study)
    for row in summarize(results):
        print(f"[stability] {row['configuration']}: final {row['metric']} mean {_fmt(row['final_mean'])} "
              f"std {_fmt(row['final_std'])} min {_fmt(row['final_min'])} max {_fmt(row['final_max'])}; "
              f"failed {row['failed']}/{row['runs']}")
    print(f"[stability] results in {paths['markdown']}")
    return 0
