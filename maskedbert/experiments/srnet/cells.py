"""An srnet study as maskedbert.sweep cells: which cells a config makes (`srnet_cells`), what each cell
runs and what the report reads (maskedbert/experiments/srnet/command.py launches them).

    finetune/<loss>                      the dense model fine-tuned with <loss> (its checkpoint is shared)
    <pipeline>/mask/<loss>/s<sparsity>   one mask-training result
    <pipeline>/imp/<loss>                one IMP sequence: its rounds are sequential, its result every level's row
    oracle/mask/ce/s<sparsity>           mask training of the CE model on OOD training data

A cell's result is the list of its cells/<key>.json rows (the srnet runner writes those atomically and
skips finished ones). Shared caches in --out (checkpoints/finetuned-<loss>.safetensors, teacher_probs.json,
bias_probs.json) are written write-then-rename with the same content by whichever cell computes them;
`needs` makes a cell that starts from a fine-tuned model (or takes CE teacher predictions) wait for it,
so two workers never train the same dense model.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from maskedbert.experiments.srnet.config import PIPELINES, RESULT_COLUMNS, SWEEP_FIELDS, SRNetConfig
from maskedbert.experiments.srnet.options import write_report
from maskedbert.experiments.tables import results_text_table
from maskedbert.loss_registry import LOSSES
from maskedbert.sweep.study import Cell
from maskedbert.log import status as log_status

__all__ = ["KIND", "cell_spec", "run_cell", "report_cells", "study_settings", "cell_rows",
           "forget_stale_cells", "remember_runner", "srnet_cells"]

KIND = "srnet"  # its name in sweep.json: maskedbert.experiments.study_kinds maps it to run_cell, report_cells
_ROW_ORDER = {p: i for i, p in enumerate(("finetune", *PIPELINES, "oracle"))}


def cell_spec(cfg: SRNetConfig, pipeline: str, method: str, loss: str, sparsity: float | None) -> dict[str, Any]:
    # out as an absolute path: workers and SLURM jobs may start in another directory
    config = dict(dataclasses.asdict(cfg), out=os.path.abspath(cfg.out))
    return {"config": config, "pipeline": pipeline, "method": method, "loss": loss, "sparsity": sparsity}


def study_settings(cfg: SRNetConfig) -> dict[str, Any]:
    """What makes two launches' cells comparable: every field but those that only choose cells."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in SWEEP_FIELDS}
    if settings.get("tokenizer") is None:  # the model's own: as in studies that do not record the field
        settings.pop("tokenizer", None)
    return settings


# ---- running a cell ----------------------------------------------------------------------------------
_RUNNERS: dict[str, Any] = {}  # one runner per config in this process: inline cells share data, models, caches


def _runner_key(config: dict) -> str:
    return json.dumps(dict(config, out=os.path.abspath(config["out"])), sort_keys=True, default=str)


def remember_runner(runner) -> None:
    """Let this process's cells reuse `runner` (built by the command) instead of loading everything again."""
    _RUNNERS[_runner_key(json.loads(json.dumps(dataclasses.asdict(runner.base_cfg), default=str)))] = runner


def _runner_for(config: dict, progress: bool):
    key = _runner_key(config)
    if key not in _RUNNERS:
        from maskedbert.experiments.srnet.pipelines import SRNetRunner  # keeps --help torch-free

        _RUNNERS[key] = SRNetRunner(SRNetConfig(**config), progress=progress)
    return _RUNNERS[key]


def _cell_keys(runner, spec: dict) -> list[str]:
    pipeline, method, loss = spec["pipeline"], spec["method"], spec["loss"]
    if method == "imp":
        return [runner.cell_key(pipeline, "imp", loss, s) for s in runner.base_cfg.sparsities]
    return [runner.cell_key(pipeline, method, loss, spec["sparsity"])]


def run_cell(spec: dict[str, Any], cell_dir: str, *, progress: bool = False) -> list[dict]:
    """The sweep runner: run one srnet cell (or read it back when cells/<key>.json exists); returns its rows."""
    runner = _runner_for(spec["config"], progress)
    pipeline, method, loss, sparsity = spec["pipeline"], spec["method"], spec["loss"], spec["sparsity"]
    if pipeline == "finetune":
        runner.run_dense(loss)
    elif pipeline == "oracle":
        runner.run_oracle_cell(sparsity)
        if not runner.data.ood_train:  # the OOD task has no training split: no oracle row
            log_status(f"[srnet] oracle s{sparsity:.2f}: the OOD task has no training data; no oracle cell")
            return []
    elif method == "imp":
        runner.run_imp_sequence(pipeline, loss)
    else:
        runner.run_mask_cell(pipeline, loss, sparsity)
    rows = []
    for key in _cell_keys(runner, spec):
        path = os.path.join(runner.base_cfg.out, "cells", key + ".json")
        if not os.path.isfile(path):
            raise RuntimeError(f"{key}: the cell ran but wrote no {path}")
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    return rows


def _row_key(row: dict) -> str:
    return f"{row['pipeline']}-{row['method']}-{row['loss']}-s{row['sparsity']:.2f}"


def forget_stale_cells(study) -> list[str]:
    """Cells whose rows' cells/<key>.json files were deleted run again (cells/ is what srnet resumes from)."""
    stale = []
    for cell, rows in study.finished():
        if any(not os.path.isfile(os.path.join(study.dir, "cells", _row_key(r) + ".json")) for r in rows):
            study.forget_result(cell.id)
            stale.append(cell.id)
    return stale


# ---- the report --------------------------------------------------------------------------------------
def cell_rows(study) -> list[dict]:
    """Every finished cell's rows, ordered as the results table: dense first, then pipeline, method, loss."""
    rows = [row for _, result in study.finished() for row in result]
    rows.sort(key=lambda r: (_ROW_ORDER.get(r["pipeline"], 99), r["method"], r["loss"], r["sparsity"]))
    return rows


def report_cells(study) -> dict[str, str]:
    """The sweep reporter: results.csv / results.md / srnet_sparsity.png from the finished cells; prints the table."""
    rows = cell_rows(study)
    paths = write_report(rows, study.dir, study.info.get("title", "srnet"))
    print(results_text_table(rows, RESULT_COLUMNS))
    return {os.path.basename(path): path for path in paths}


def srnet_cells(cfg: SRNetConfig) -> list:
    """The study's cells in the order an inline run takes them (dense models first)."""
    def needs_teacher(loss: str) -> bool:  # the CE fine-tuned model predicts the teacher probabilities
        return LOSSES[loss].needs_teacher and not cfg.teacher_probs

    first_search: dict[str, str] = {}  # (b) IMP with one search loss: the first cell searches, the others wait

    def start_needs(pipeline: str, method: str, loss: str, sparsity: float | None = None) -> list[str]:
        needs = ["finetune/ce"] if needs_teacher(loss) else []
        cell = cfg.for_cell(pipeline, method)
        if pipeline == "ft_prune":
            needs += {"same_loss": [f"finetune/{loss}"], "ce": ["finetune/ce"]}.get(cell.prune_start, [])
        elif pipeline == "prune_ft" and method == "mask" and cell.prune_ft_masks == "ft_prune_poe":
            # the masks of (a)'s PoE mask training on the CE model: that cell when the study has it
            source = f"ft_prune/mask/poe/s{sparsity:.2f}"
            a_cell = "ft_prune" in cfg.pipelines and "mask" in cfg.methods and "poe" in cfg.losses
            needs += [source] if a_cell else ["finetune/ce"]
        elif pipeline == "prune_ft" and method == "imp" and cell.prune_ft_ticket == "finetune":
            search = loss if cell.imp_search_loss == "same" else cell.imp_search_loss
            own = f"{pipeline}/imp/{loss}"
            needs += [first_search.setdefault(search, own)] if first_search.get(search, own) != own else []
        return list(dict.fromkeys(needs))

    spec = cell_spec
    cells, dense, pruned = [], {}, []
    for pipeline in cfg.pipelines:
        for loss in cfg.losses:
            for method in (["mask"] if pipeline == "mask_pretrained" else cfg.methods):
                if method == "imp":
                    needs = start_needs(pipeline, method, loss)
                    pruned.append(Cell(f"{pipeline}/imp/{loss}", spec(cfg, pipeline, "imp", loss, None), tuple(needs)))
                else:
                    for s in cfg.sparsities:
                        needs = start_needs(pipeline, method, loss, s)
                        pruned.append(Cell(f"{pipeline}/mask/{loss}/s{s:.2f}", spec(cfg, pipeline, "mask", loss, s),
                                           tuple(needs)))
                dense.update(dict.fromkeys(n.split("/", 1)[1] for n in needs if n.startswith("finetune/")))
    if cfg.oracle:
        dense["ce"] = None
        pruned += [Cell(f"oracle/mask/ce/s{s:.2f}", spec(cfg, "oracle", "mask", "ce", s), ("finetune/ce",))
                   for s in cfg.sparsities]
    # every loss of the study has its dense row; CE joins when a teacher or a pruning start needs it, and
    # comes first (inline runs cells in this order, and the conf_reg model's teacher is the CE model)
    losses = list(dict.fromkeys([*cfg.losses, *dense]))
    for loss in sorted(losses, key=lambda loss: loss != "ce"):
        needs = ("finetune/ce",) if loss != "ce" and needs_teacher(loss) else ()
        cells.append(Cell(f"finetune/{loss}", spec(cfg, "finetune", "dense", loss, 0.0), needs))
    return cells + pruned
