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
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any
from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError

__all__ = ["FinetuneConfig", "run_finetune", "build_parser", "main", "write_json"]


@dataclass
class FinetuneConfig:
    model: str = "tiny-bert"
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
    select_best_after: float = 0.0
    selection_metric: str | None = None  # dev metric that picks the best checkpoint; None: the task's metric
    eval_batch_size: int = 64
    log_every: int = 10
    checkpoint_every: int | None = None
    save_best_model: bool = False
    save_final_model: bool = False
    config_overrides: dict[str, Any] | None = None  # model config fields, e.g. dropout or tiny sizes
    progress: bool = True
    device: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown finetune settings {unknown}; known: {sorted(known)}")
        return cls(**values)


def write_json(path: str, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def _task_vocabulary(task_name: str):
    if task_name == "synthetic-pair":
        from maskedbert.data import synthetic_pair_vocabulary

        return synthetic_pair_vocabulary()
    from maskedbert.data import tasks

    spec = tasks.get_task(task_name)
    vocabulary = getattr(spec.generator, "vocabulary", None)
    return vocabulary() if callable(vocabulary) else None


def run_finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune, evaluate on the task's dev split, and write result.json; returns the result dict.

    A run whose result.json exists is not rerun (its result is returned). A run whose loss turns
    NaN/inf ends with diverged=True and failed=True.
    """
    from maskedbert.data import PadCollator, encode_examples, get_task, load_examples
    from maskedbert.metrics import label_mapping, majority_baseline
    from maskedbert.models import TINY_MODELS, load_model_and_tokenizer
    from maskedbert.train import NonFiniteLossError, TrainConfig, Trainer, make_evaluator, set_seed
    from maskedbert.train import distributed as dist_utils

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
    os.makedirs(out, exist_ok=True)
    if dist_utils.is_main_process():
        write_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    train_examples = load_examples(spec, "train", data_dir=config.data_dir, seed=config.data_seed,
                                   limit=config.train_limit)
    dev_examples = load_examples(spec, spec.dev_split, data_dir=config.data_dir, seed=config.data_seed,
                                 limit=config.dev_limit)
    set_seed(config.seed)  # the seed fixes the new head's initialization and the data order
    vocab = _task_vocabulary(spec.name) if config.model in TINY_MODELS else None
    model, tokenizer = load_model_and_tokenizer(
        config.model, spec.num_labels, label_names=spec.label_names or None, vocab=vocab,
        problem_type="regression" if spec.is_regression else None, config_overrides=config.config_overrides)
    label_map = None if spec.is_regression else label_mapping(spec.label_names, model.config.label2id)
    train_set = encode_examples(train_examples, tokenizer, config.max_length, label_map, spec.is_regression)
    dev_set = encode_examples(dev_examples, tokenizer, config.max_length, label_map, spec.is_regression)
    collate = PadCollator(tokenizer.pad_token_id)
    baseline = majority_baseline(spec.metric, [e.label for e in train_examples], [e.label for e in dev_examples])
    train_config = TrainConfig(
        output_dir=out, num_epochs=config.num_epochs, max_steps=config.max_steps, batch_size=config.batch_size,
        grad_accum_steps=config.grad_accum_steps, lr=config.lr, weight_decay=config.weight_decay,
        adam_eps=config.adam_eps, adam_betas=(config.adam_beta1, config.adam_beta2), correct_bias=config.correct_bias,
        schedule=config.schedule, warmup_ratio=config.warmup_ratio, warmup_rounding=config.warmup_rounding,
        max_grad_norm=config.max_grad_norm, clip_mode=config.clip_mode,
        precision=config.precision, eval_every=config.eval_every, best_metric=selection_metric,
        select_best_after=config.select_best_after, save_best_model=config.save_best_model,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every, seed=config.seed,
        progress=config.progress, device=config.device)
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
        last = trainer.last_metrics or {}
        result.update(diverged=True, error=str(exc), steps=trainer.global_step,
                      final_metric=last.get(spec.metric, baseline), final_metrics=last,
                      best_metric=trainer.best_value, best_step=trainer.best_step,
                      best_metrics=trainer.best_metrics)
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


def build_parser(prog: str = "maskedbert finetune") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Fine-tune one model on one task.")
    defaults = FinetuneConfig()
    p.add_argument("--config", help="JSON file of FinetuneConfig fields (flags given override it)")
    p.add_argument("--model", help=f"hub name, local path, offline-minilm or tiny-bert (default {defaults.model})")
    p.add_argument("--task", help=f"task name (default {defaults.task})")
    p.add_argument("--out", dest="output_dir", help="run directory")
    p.add_argument("--data-dir", dest="data_dir", help="directory of the task's original files")
    p.add_argument("--seed", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--epochs", dest="num_epochs", type=float)
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--grad-accum-steps", dest="grad_accum_steps", type=int)
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--warmup-ratio", dest="warmup_ratio", type=_optional_float)
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--adam-eps", dest="adam_eps", type=float)
    p.add_argument("--no-bias-correction", dest="correct_bias", action="store_const", const=False,
                   help="BERT's original Adam without bias correction")
    p.add_argument("--max-grad-norm", dest="max_grad_norm", type=_optional_float)
    p.add_argument("--clip-mode", dest="clip_mode", choices=["global", "per_parameter"])
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--evals-per-epoch", dest="evals_per_epoch", type=float)
    p.add_argument("--eval-every", dest="eval_every", type=int)
    p.add_argument("--train-limit", dest="train_limit", type=int)
    p.add_argument("--dev-limit", dest="dev_limit", type=int)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    p.add_argument("--save-final-model", dest="save_final_model", action="store_const", const=True)
    p.add_argument("--save-best-model", dest="save_best_model", action="store_const", const=True)
    p.add_argument("--device")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        with open(args.config) as f:
            values.update(json.load(f))
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    try:
        config = FinetuneConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        print(f"maskedbert finetune: {exc}", file=sys.stderr)
        return 2
    result = run_finetune(config)
    print(json.dumps({k: result.get(k) for k in ("task", "model", "seed", "final_metric", "best_metric",
                                                    "majority_baseline", "failed", "diverged")}))
    return 0
