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
runs.csv, summary.csv and results.md and three PNG plots (metric box plot, per-layer gradient norms
of failed vs successful runs, training loss vs dev metric). The tables read every run twice: the
last model (final_*; a run fails when its final dev metric is at or below the majority-class
baseline, the paper's rule) and the best dev checkpoint by the task's selection metric (best_*;
MRPC: acc_and_f1, as the reference's early stopping); per configuration the mean, std (ddof=1),
min, max and failed-run rate of each. Rerunning the same command resumes: finished seeds are read
back, not rerun, and an interrupted seed continues from its checkpoint.
Each run is a cell of a maskedbert.sweep study (<out>/sweep.json), so it can run inline (default),
in local worker processes or as a SLURM job (--launcher; docs/SCALING.md); `maskedbert report <out>`
rebuilds the tables from the finished runs (--parallel N is short for --launcher local --workers N).
This module makes the cells, runs and reports them; the command that launches them is
maskedbert/experiments/stability/command.py.

Presets (presets.py, `--list-presets`, `--show-preset NAME`) hold the paper's settings as
the reference code's configurations: "bert-recipe-<task>-<model>" is BERT's original recipe (3 epochs,
Adam without bias correction, lr in {1,2,3}e-5); "mosbach-<task>-<model>" the proposed baseline
(bias correction, 20 epochs, lr 2e-5, 10% warmup, 3 evaluations per epoch); per model its weight
decay, Adam beta2, clipping and dropout; tasks rte, mrpc, cola; models bert (bert-large-uncased),
roberta (roberta-large), albert (albert-large-v2); 25 seeds each.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import statistics
from typing import Any

from maskedbert._atomic import write_text_atomic
from maskedbert.experiments.finetune import FinetuneConfig, run_finetune
from maskedbert.experiments.stability.presets import PRESETS, resolve_study
from maskedbert.experiments.tables import markdown_table
from maskedbert.sweep import Cell
from maskedbert.train.runlog import read_jsonl
from maskedbert.log import status as log_status

__all__ = ["PRESETS", "resolve_study", "run_rows", "summarize", "write_reports", "run_cell", "report_cells",
           "print_run", "finished_results", "study_cells", "KIND"]


# ---- a run as a sweep cell (maskedbert.experiments.stability.command makes one per configuration and seed) ----
KIND = "stability"  # its name in sweep.json: maskedbert.experiments.study_kinds maps it to run_cell, report_cells


def run_cell(spec: dict[str, Any], cell_dir: str, *, progress: bool = False) -> dict[str, Any]:
    """One run of the study (the sweep runner): fine-tune in `cell_dir`, resuming from its checkpoint."""
    config = FinetuneConfig.from_dict({**spec["finetune"], "output_dir": cell_dir, "progress": progress})
    return run_finetune(config)


def finished_results(sweep_study) -> list[dict[str, Any]]:
    return [dict(result, configuration=cell.spec["configuration"], run_dir=sweep_study.cell_dir(cell.id))
            for cell, result in sweep_study.finished()]


def report_cells(sweep_study) -> dict[str, str]:
    """The sweep reporter: tables and plots from the finished cells (configurations with none are left out)."""
    results = finished_results(sweep_study)
    study = dict(sweep_study.info)
    present = dict.fromkeys(r["configuration"] for r in results)
    study["configurations"] = {k: v for k, v in study["configurations"].items() if k in present}
    paths = write_reports(results, sweep_study.dir, study)
    for row in summarize(results):
        log_status(f"[stability] {row['configuration']}: final {row['metric']} mean {_fmt(row['final_mean'])} "
              f"std {_fmt(row['final_std'])} min {_fmt(row['final_min'])} max {_fmt(row['final_max'])}; "
              f"failed {row['failed']}/{row['runs']}")
    return paths


def print_run(job, result) -> None:
    row = _run_row(result)
    status = "diverged" if row["diverged"] else ("FAILED" if row["failed"] else "ok")
    log_status(f"[stability] {job[0]} seed {job[1]}: final {row['metric']} {_fmt(row['final_metric'])}, "
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
    return markdown_table(columns, [[_fmt(row.get(c)) for c in columns] for row in rows])


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
    from maskedbert.experiments import plots  # keeps --help light (matplotlib)

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
        log_status(f"[stability] no gradient-norm plot: {exc}", level=logging.WARNING)
    paths["loss_vs_metric"] = plots.loss_vs_metric_plot(
        [(log, r["failed"], r["final_metric"]) for log, r in zip(logs, results)],
        os.path.join(out, "loss_vs_metric.png"), metric, baseline)
    return paths


def study_cells(study: dict[str, Any]) -> list:
    cells = []
    for name in study["configurations"]:
        for seed in study["seeds"]:
            values = {**study["base"], **study["configurations"][name], "seed": seed}
            if study.get("keep_checkpoints"):  # retention only: the run's results do not depend on it
                values["keep_checkpoint"] = True
            cells.append(Cell(f"{name}/seed_{seed}", {"configuration": name, "finetune": values}))
    return cells
