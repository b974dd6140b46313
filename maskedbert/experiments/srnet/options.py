"""`maskedbert srnet`: sparse and robust subnetworks (Liu et al., NeurIPS 2022), end to end.

Pipelines (each with any loss: ce, poe, reweight, conf_reg), over a sparsity sweep (20/50/70/90%):
  ft_prune         (a) fine-tune the full model with the loss, then prune it: mask training (weights
                       frozen) or IMP (no rewinding: each round trains on from the last)
  prune_ft         (b) find masks of the pretrained model (mask training, or IMP pruning the pre-trained
                       weights first), then fine-tune each ticket on its own from the pre-trained weights
                       and the initial head with the loss, keeping the best dev checkpoint
  mask_pretrained  (c) mask-train the pretrained model, task head included; no parameter value changes
  --oracle             mask-train the CE fine-tuned model on ID + OOD training data
Dense models (the conf-reg teacher too) are their best dev checkpoints; mask training keeps the best
ID dev mask after 70% of training; every selection uses the task's metric (QQP: F1); sparsity is
fixed at the target unless --initial-sparsity asks for gradual increase (GSI). Paper settings:
--preset (see --list-presets; --dry-run prints each cell's phases). docs/PROTOCOLS.md says where
each default comes from.
Outputs in --out: results.csv / results.md (ID and OOD metric per pipeline, method, loss and
sparsity), srnet_sparsity.png, config.json (the resolved config and protocols), masks/*.safetensors,
cells/*.json. A rerun with the same --out skips finished cells (and says so) and resumes an IMP
sequence at its next round. Each cell is a maskedbert.sweep cell: --launcher inline (default, here),
local (--workers / --gpus) or slurm; `maskedbert status|report <out>` (docs/SCALING.md). This module
parses, checks and reports; the command that launches the cells is maskedbert/experiments/srnet/command.py.

Default data: the offline synthetic NLI task with a planted overlap shortcut and its HANS-style
challenge set; real tasks go through maskedbert.data (--task mnli --data-dir ... --ood-task hans ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil

from maskedbert.data.synthetic_nli import NLI3_LABELS
from maskedbert.data.tasks import get_task
from maskedbert.errors import UsageError
from maskedbert.experiments import cli_common as cc
from maskedbert.experiments.cli_common import HelpFormatter
from maskedbert.experiments.srnet import presets as srnet_presets
from maskedbert.experiments.srnet.config import (AMOUNT_OF, AUTO_YES_NO, FT_SELECT, IMP_SCHEDULES, METHODS,
                                                 ORACLE_DATA, PIPELINES, PRUNE_FT_MASKS, PRUNE_FT_TICKETS,
                                                 RESULT_COLUMNS,
                                                 REWIND_CHOICES, SCORE_INITS, SELECT_MODES, SPARSITY_METHODS,
                                                 SRNetConfig, parse_extra_ood)
from maskedbert.experiments.tables import write_results
from maskedbert.help_text import default_text
from maskedbert.loss_registry import loss_names
from maskedbert.models import check_tokenizer_source
from maskedbert.train.reporting import add_report_to_argument, check_report_to

# SRNetRunner loads on first use (module __getattr__ below): --help imports no torch
__all__ = ["PIPELINES", "METHODS", "RESULT_COLUMNS", "SRNetConfig", "SRNetRunner", "build_parser",  # noqa: F822
           "parse_args", "parse_command_line", "validate", "write_report", "clear_results", "RUN_OUTPUTS"]


def write_report(rows: list[dict], out: str, title: str) -> list[str]:
    """results.csv / results.md and srnet_sparsity.png (dense models as dashed reference lines)."""
    from maskedbert.experiments.plots import plot_metrics_vs_sparsity  # keeps --help light (matplotlib)

    paths = write_results(rows, out, RESULT_COLUMNS)
    curves = [dict(r, series=f"{r['pipeline']}/{r['method']}/{r['loss']}") for r in rows if r["method"] != "dense"]
    dense = [r for r in rows if r["method"] == "dense"]
    plot = os.path.join(out, "srnet_sparsity.png")
    metrics = [("id_accuracy", "ID accuracy"), ("ood_accuracy", "OOD accuracy")]
    plot_metrics_vs_sparsity(curves, plot, metrics=metrics, series_key="series", title=title, references=dense)
    return paths + [plot]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _steps_list(text: str) -> list[int]:
    try:
        return [int(v) for v in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of step numbers, got {text!r}") from None


def __getattr__(name):  # the runner (torch, transformers) loads on first use: `srnet --help` stays fast
    if name == "SRNetRunner":
        from maskedbert.experiments.srnet.pipelines import SRNetRunner  # keeps --help torch-free

        return SRNetRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    d = SRNetConfig.__new__(SRNetConfig)  # the defaults, without validation
    for f in dataclasses.fields(SRNetConfig):
        setattr(d, f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
    p = argparse.ArgumentParser(prog="maskedbert srnet", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--preset", default=None, help="the paper's settings for a task (see --list-presets); "
                   "flags given override them")
    p.add_argument("--list-presets", action="store_true", help="print the presets and their settings, then exit")
    p.add_argument("--dry-run", action="store_true",
                   help="write the resolved config.json and exit (with --fresh: say what it would delete, "
                        "delete nothing)")
    p.add_argument("--fresh", action="store_true",
                   help="delete this study's earlier results in --out and start over (files it did not write stay)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each finished training run's checkpoint (model + optimizer) under logs/; by default "
                        "a run's checkpoint is deleted once its cell is recorded")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer name or folder, when --model is a folder saved without one")
    p.add_argument("--out", default=d.out)
    p.add_argument("--task", default=d.task, help="synthetic-nli (offline) or a registered task, e.g. mnli")
    p.add_argument("--data-dir", default=None, help="directory of the task's original files (else the hub)")
    p.add_argument("--ood-task", default=d.ood_task, help="hans, paws-qqp, paws-wiki, fever-symmetric-v1/v2")
    p.add_argument("--ood-data-dir", default=None)
    p.add_argument("--ood-split", default=d.ood_split)
    p.add_argument("--extra-ood", type=_names, default=d.extra_ood,
                   help="more OOD sets to evaluate, comma list of task:split or task:split=DIR (DIR: --ood-data-dir)")
    p.add_argument("--model", default=d.model, help="offline-minilm, tiny-bert, a hub name or a local directory")
    p.add_argument("--pipelines", type=_names, default=d.pipelines, help=f"comma list of {', '.join(PIPELINES)}")
    p.add_argument("--methods", type=_names, default=d.methods, help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--losses", type=_names, default=d.losses, help=f"comma list of {', '.join(loss_names())}")
    p.add_argument("--sparsities", type=_floats, default=d.sparsities, help="fractions pruned, each in (0, 1)")
    p.add_argument("--oracle", action="store_true", help="also mask-train on OOD training data (oracle)")
    p.add_argument("--bias-model", default=d.bias_model,
                   help="hans_features, features, hypothesis_only, or a probabilities file (.json/.jsonl/.npy)")
    default_text(p.add_argument("--teacher-probs", default=None, help="teacher probabilities file"),
                 "the CE fine-tuned model's predictions")
    order_help = ("the file's column order as label names, e.g. contradiction,entailment,neutral (the reference's "
                  "MNLI files); needed for a .npy of more than two classes (files maskedbert writes name their labels)")
    default_text(p.add_argument("--bias-label-order", default=d.bias_label_order,
                                help="--bias-model file: " + order_help), "the file's own labels; none for a .npy")
    default_text(p.add_argument("--teacher-label-order", default=d.teacher_label_order,
                                help="--teacher-probs file: " + order_help), "the file's own labels; none for a .npy")
    p.add_argument("--anneal-floor", type=float, default=None, help="anneal bias probabilities to this power")
    helps = {"ft_steps": "steps of each fine-tuning run (--ft-epochs wins)",
             "prune_steps": "steps of each mask-training run or IMP round (--prune-epochs wins)",
             "reset_every": "threshold_reset: steps between threshold resets",
             "eval_every": "mask training: steps between ID dev evaluations for selection",
             "warmup_steps": "warmup steps of every run"}
    derived = {"eval_every": "a tenth of the run", "warmup_steps": "--warmup-ratio of its steps"}
    for name in ("ft_steps", "prune_steps", "batch_size", "max_length", "reset_every", "eval_every", "warmup_steps",
                 "train_size", "dev_size", "challenge_per_cell", "seed"):
        action = p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name), help=helps.get(name))
        if name in derived and getattr(d, name) is None:
            default_text(action, derived[name])
    helps = {"ft_epochs": "epochs of each fine-tuning run", "prune_epochs": "epochs of each mask-training run or "
             "IMP round", "initial_sparsity": "mask training starts here (none: at the target, fixed sparsity); "
             "lower: gradual sparsity increase on the cubic schedule (GSI, e.g. 0.7)",
             "ramp_end": "GSI: fraction of training at which the target sparsity is reached",
             "select_after": "--select best: evaluations from this fraction of training on count",
             "lr_scores": "learning rate of the mask scores", "threshold": "mask threshold tau (score > tau kept)"}
    for name in ("ft_epochs", "prune_epochs", "lr", "lr_scores", "warmup_ratio", "threshold", "initial_sparsity",
                 "ramp_end", "select_after", "imp_per_round"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name), help=helps.get(name))
    p.add_argument("--device", default=d.device, help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--train-limit", type=int, default=None, help="real tasks: keep the first N training examples")
    p.add_argument("--eval-limit", type=int, default=None, help="real tasks: keep the first N dev / OOD examples")
    p.add_argument("--sparsity-method", default=d.sparsity_method, choices=SPARSITY_METHODS,
                   help="threshold_reset (the reference code) or exact_topk every step")
    p.add_argument("--scope", default=d.scope, choices=("layer", "global"))
    p.add_argument("--score-init", default=d.score_init, choices=SCORE_INITS,
                   help="magnitude: 2*tau for the kept top |W|, 0 else; magnitude_soft: |W| with each threshold "
                        "at the k-th |W|")
    p.add_argument("--select", default=d.select, choices=SELECT_MODES,
                   help="mask training keeps the best ID dev mask (after --select-after) or the last one")
    p.add_argument("--imp-amount-of", default=d.imp_amount_of, choices=AMOUNT_OF)
    p.add_argument("--rewind", default=d.rewind, choices=REWIND_CHOICES,
                   help="IMP: auto = none for ft_prune, start (the pre-trained weights) for prune_ft")
    p.add_argument("--rewind-classifier", action="store_true", help="IMP rewinding also rewinds the task head")
    p.add_argument("--prune-start", default=d.prune_start,
                   help="ft_prune starts from: same_loss, ce, or a checkpoint path (any fine-tuning step)")
    default_text(p.add_argument("--rewind-to", default=None, help="IMP rewinds to this checkpoint"),
                 "its starting weights")
    p.add_argument("--mask-classifier", choices=AUTO_YES_NO, default=d.mask_classifier,
                   help="mask the task classifier too (auto: yes, as the paper)")
    p.add_argument("--train-classifier", choices=AUTO_YES_NO, default=d.train_classifier,
                   help="the head trains in mask training (auto: no: no parameter value changes) and when a "
                        "subnetwork is fine-tuned (auto: yes)")
    p.add_argument("--select-ties", default=d.select_ties, choices=("earlier", "later"),
                   help="mask selection: an equal dev metric keeps the earlier mask (the reference) or the later one")
    p.add_argument("--select-metric", default=d.select_metric,
                   help="the ID dev metric every selection maximises: auto (the task's: QQP f1, else accuracy), "
                        "accuracy, f1, ...")
    p.add_argument("--ft-select", default=d.ft_select, choices=FT_SELECT,
                   help="dense models (the conf-reg teacher too) and (b)'s tickets: the best dev checkpoint "
                        "(strict >, every --ft-eval-every steps) or the last model")
    default_text(p.add_argument("--ft-eval-every", type=int, default=d.ft_eval_every,
                                help="--ft-select best: steps between dev evaluations"), "a tenth of the run")
    p.add_argument("--imp-schedule", default=d.imp_schedule, choices=IMP_SCHEDULES,
                   help="each IMP round's fresh LR schedule decays over the whole budget (budget) or the round")
    p.add_argument("--imp-search-loss", default=d.imp_search_loss,
                   help="(b) IMP finds its masks with the cell's loss (same) or this one (e.g. poe)")
    p.add_argument("--prune-ft-ticket", default=d.prune_ft_ticket, choices=PRUNE_FT_TICKETS,
                   help="(b) IMP: fine-tune each ticket from the pre-trained weights and initial head (finetune) "
                        "or report the IMP round's own training (round)")
    p.add_argument("--prune-ft-masks", default=d.prune_ft_masks, choices=PRUNE_FT_MASKS,
                   help="(b) mask training: mask-train the pre-trained model with the cell's loss (own) or reuse "
                        "(a)'s PoE masks of the CE model (ft_prune_poe)")
    p.add_argument("--oracle-data", default=d.oracle_data, choices=ORACLE_DATA,
                   help="the oracle trains on ID + OOD training data (CE) or on OOD data only")
    default_text(p.add_argument("--oracle-task", default=d.oracle_task, help="the oracle's OOD training task"),
                 "--ood-task")
    p.add_argument("--oracle-split", default=d.oracle_split, help="the split of --oracle-task the oracle trains on")
    p.add_argument("--oracle-repeat", type=int, default=d.oracle_repeat,
                   help="the oracle's OOD training examples, repeated this many times")
    p.add_argument("--oracle-extra", type=_names, default=d.oracle_extra,
                   help="more OOD training sets of the oracle, comma list of task:split[=DIR] (DIR: --ood-data-dir)")
    p.add_argument("--save-ft-steps", type=_steps_list, default=[],
                   help="comma list of fine-tuning steps to checkpoint (to prune or rewind from later)")
    add_report_to_argument(p, default=d.report_to)
    return p


def parse_args(argv) -> SRNetConfig:
    return parse_command_line(argv)[0]


def _given_flags(argv, build) -> set[str]:
    """The option names the command line sets explicitly (not from a default or a preset)."""
    p = build()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def parse_command_line(argv, build=build_parser) -> tuple[SRNetConfig, argparse.Namespace]:
    """(config, every parsed flag): `build` makes the parser (the srnet command adds its launcher flags);
    flags that are not SRNetConfig fields (--dry-run, --launcher, ...) stay out of the config."""
    p = build()
    first = p.parse_args(argv)
    if first.list_presets:
        return None, first
    values = {}
    if first.preset is not None:
        values = srnet_presets.preset_config(first.preset)  # UsageError naming --preset when unknown
        given = _given_flags(argv, build)
        # a flag given on the command line wins everywhere, also over the preset's per-pipeline values
        values["overrides"] = {cell: {k: v for k, v in fields.items() if k not in given}
                               for cell, fields in values["overrides"].items()}
        p.set_defaults(**{k: v for k, v in values.items() if k in vars(first)}, preset=first.preset)
    args = p.parse_args(argv)
    config_fields = {f.name for f in dataclasses.fields(SRNetConfig)}
    fields = {k: v for k, v in vars(args).items() if k in config_fields}
    fields.update({k: v for k, v in values.items() if k not in fields})  # preset fields that are not flags
    return SRNetConfig(**fields), args


def validate(cfg: SRNetConfig, dry_run: bool = False) -> None:
    """Everything a user can get wrong, checked before anything is written (UsageError names the flag).

    dry_run: files that only training reads (a bias-model file) need not exist yet."""
    if cfg.task != "synthetic-nli":  # the synthetic task generates its own OOD set
        spec = cc.check_task(cfg.task, "--task")
        ood = cc.check_task(cfg.ood_task, "--ood-task")
        cc.check_data_dir(spec, ["train", spec.dev_split], cfg.data_dir, "--data-dir")
        cc.check_data_dir(ood, [cfg.ood_split], cfg.ood_data_dir, "--ood-data-dir")
        for entry in cfg.extra_ood:
            task, split, folder = parse_extra_ood(entry)
            cc.check_data_dir(cc.check_task(task, "--extra-ood"), [split], folder or cfg.ood_data_dir, "--extra-ood")
        if cfg.oracle:
            cell = cfg.for_cell("oracle", "mask")  # a preset's oracle settings
            oracle = cc.check_task(cell.oracle_task or cfg.ood_task, "--oracle-task")
            cc.check_data_dir(oracle, [cell.oracle_split], cfg.ood_data_dir, "--ood-data-dir")
            for entry in cell.oracle_extra:
                task, split, folder = parse_extra_ood(entry)
                cc.check_data_dir(cc.check_task(task, "--oracle-extra"), [split], folder or cfg.ood_data_dir,
                                  "--oracle-extra")
    _check_probability_files(cfg, dry_run)
    from maskedbert.metrics import METRIC_FUNCTIONS  # keeps --help light (numpy)

    if cfg.select_metric != "auto" and cfg.select_metric not in METRIC_FUNCTIONS:
        raise UsageError(f"--select-metric: must be auto or one of {', '.join(sorted(METRIC_FUNCTIONS))}, "
                         f"got {cfg.select_metric!r}")

    check_report_to(cfg.report_to, "--report-to")
    cc.check_model(cfg.model, "--model")
    cc.check_out_dir(cfg.out, "--out")
    cc.check_device(None if cfg.device == "auto" else cfg.device, "--device")
    _check_numbers(cfg)
    _check_files(cfg, dry_run)


def _check_numbers(cfg: SRNetConfig) -> None:
    """Numbers the config's own checks leave open (NaN, inf, zero sizes), with the flag that sets each."""
    positive = {"--lr": cfg.lr, "--lr-scores": cfg.lr_scores, "--adam-eps": cfg.adam_eps}
    for flag, value in positive.items():
        cc.check_number(flag, value, low=0, low_open=True)
    cc.check_number("--weight-decay", cfg.weight_decay, low=0)
    cc.check_number("--max-grad-norm", cfg.max_grad_norm, low=0)
    cc.check_number("--threshold", cfg.threshold)
    cc.check_number("--imp-per-round", cfg.imp_per_round, low=0, high=1, low_open=True, high_open=True)
    cc.check_number("--warmup-ratio", cfg.warmup_ratio, low=0, high=1)
    cc.check_number("--anneal-floor", cfg.anneal_floor, low=0, high=1, allow_none=True)
    for flag, value in (("--ft-epochs", cfg.ft_epochs), ("--prune-epochs", cfg.prune_epochs)):
        cc.check_number(flag, value, low=0, low_open=True, allow_none=True)
    for flag, value in (("--ft-steps", cfg.ft_steps), ("--prune-steps", cfg.prune_steps),
                        ("--batch-size", cfg.batch_size), ("--reset-every", cfg.reset_every),
                        ("--train-size", cfg.train_size), ("--dev-size", cfg.dev_size),
                        ("--challenge-per-cell", cfg.challenge_per_cell)):
        cc.check_number(flag, value, low=1, integer=True)
    # [CLS] premise [SEP] hypothesis [SEP]: below 4 tokens nothing of the text is left
    cc.check_number("--max-length", cfg.max_length, low=4, integer=True)
    for flag, value in (("--eval-every", cfg.eval_every), ("--train-limit", cfg.train_limit),
                        ("--eval-limit", cfg.eval_limit)):
        cc.check_number(flag, value, low=1, integer=True, allow_none=True)
    cc.check_number("--warmup-steps", cfg.warmup_steps, low=0, integer=True, allow_none=True)
    cc.check_number("--seed", cfg.seed, low=0, integer=True)
    for step in cfg.save_ft_steps:
        cc.check_number("--save-ft-steps", step, low=1, integer=True)


def _check_files(cfg: SRNetConfig, dry_run: bool) -> None:
    """Files named by flags exist (the bias model: _check_probability_files); a dry run reads none of them."""
    if cfg.teacher_probs is not None and not dry_run and not os.path.isfile(cfg.teacher_probs):
        raise UsageError(f"--teacher-probs: no such file: {cfg.teacher_probs!r}")
    if cfg.tokenizer is not None and not os.path.isdir(os.path.expanduser(cfg.tokenizer)) \
            and cfg.tokenizer.startswith((".", "~", os.sep)):  # a path, not a hub name such as org/name
        raise UsageError(f"--tokenizer: no such folder: {cfg.tokenizer!r}")
    check_tokenizer_source(cfg.model, cfg.tokenizer)


def _check_probability_files(cfg: SRNetConfig, dry_run: bool) -> None:
    """The bias model is a known kind or an existing file, and a file's column order is known (its
    labels, or the --*-label-order given)."""
    from maskedbert import bias as bias_lib  # keeps --help torch-free
    from maskedbert import losses as loss_lib  # keeps --help torch-free

    needs_bias = any(loss_lib.NEEDS_BIAS[loss] for loss in cfg.losses)
    if needs_bias and not dry_run and cfg.bias_model not in bias_lib.BIAS_MODELS and not os.path.isfile(cfg.bias_model):
        kinds = ", ".join(bias_lib.BIAS_MODELS)
        raise UsageError(f"--bias-model: {cfg.bias_model!r} is neither a bias model ({kinds}) "
                         f"nor an existing file (a preset names the reference's shipped predictions, "
                         f"bias_model_preds/ of llyx97/sparse-and-robust-PLM: run from its folder or pass the path)")

    label_names = NLI3_LABELS if cfg.task == "synthetic-nli" else get_task(cfg.task).label_names
    files = ((cfg.bias_model, cfg.bias_label_order, "--bias-label-order"),
             (cfg.teacher_probs, cfg.teacher_label_order, "--teacher-label-order"))
    for path, order, flag in files:
        if path and os.path.isfile(path):
            bias_lib.check_column_order(path, label_names, order, flag)
        elif order is not None:
            bias_lib.parse_label_order(order, flag)


def progress_note(out: str) -> str:
    folder = os.path.join(out, "cells")
    done = len([n for n in os.listdir(folder) if n.endswith(".json")]) if os.path.isdir(folder) else 0
    return f"{done} finished cell(s) are kept in {folder}; run the same command again to resume (--fresh starts over)"


# what srnet writes into --out; --fresh deletes exactly these
# (the sweep's record too: sweep.json and one folder per pipeline holding its cells' sweep_*.json)
RUN_OUTPUTS = ("cells", "checkpoints", "masks", "logs", "resume", "bias_probs.json", "teacher_probs.json",
               "config.json", "results.csv", "results.md", "srnet_sparsity.png", "sweep.json", "finetune",
               *PIPELINES, "oracle")


def clear_results(out: str) -> None:
    for name in RUN_OUTPUTS:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.isfile(path):
            os.unlink(path)
