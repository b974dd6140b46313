"""A small training loop over maskedbert's Trainer for fine-tuning, IMP rounds and mask training."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

from torch import nn

from maskedbert.choices import CLIP_MODES
from maskedbert.patching import mask_param_groups
from maskedbert.pruning._checks import _check_fraction, _check_int
from maskedbert.train.runlog import read_jsonl
from maskedbert.train.trainer import TrainConfig, Trainer


@dataclass
class TrainSettings:
    """Optimizer and loop settings; the optimizer and schedule are built anew on every call."""

    steps: int
    batch_size: int = 32
    lr: float = 2e-5  # weights and head (BERT fine-tuning)
    lr_scores: float = 1e-4  # mask scores; they live on the scale of the threshold (1e-2)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # given: wins over warmup_ratio
    schedule: str = "linear"
    schedule_steps: int | None = None  # the schedule's horizon (default: steps); the reference's IMP: the budget
    max_grad_norm: float = 1.0
    clip_mode: str = "global"  # or "per_parameter" (each parameter clipped to max_grad_norm on its own)
    adam_eps: float = 1e-6
    report_to: str = "none"  # also "tensorboard" or "wandb" (maskedbert.train.reporting)
    seed: int = 0

    def __post_init__(self):
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be 'global' or 'per_parameter', got {self.clip_mode!r}")
        for name in ("lr", "lr_scores", "weight_decay", "max_grad_norm", "adam_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        _check_fraction("warmup_ratio", self.warmup_ratio)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, 0)
        if self.schedule_steps is not None:
            _check_int("schedule_steps", self.schedule_steps, 1)


def train_steps(model: nn.Module, dataset, collate_fn, loss_fn: Callable, settings: TrainSettings, *,
                step_callback: Callable[[int], object] | None = None, desc: str = "train",
                output_dir: str | None = None, progress: bool = True, resume: bool = False,
                stateful: dict | None = None) -> list[float]:
    """Train for settings.steps optimizer steps with maskedbert's Trainer; returns each step's loss.

    `loss_fn(logits, batch)` computes the loss (maskedbert.losses.make_loss_fn); parameters train
    as their requires_grad says (mask scores, weights and head by the MaskConfig), in the groups of
    patching.mask_param_groups (scores at lr_scores without decay); the optimizer and schedule are
    new on every call (IMP rebuilds them each round). `step_callback(step)` runs after every
    optimizer step (step counts from 1), e.g. a MaskSparsityController. The Trainer's log
    (log.jsonl) and final checkpoint go to `output_dir`; without one, to a temporary folder that is
    removed afterwards.

    resume=True (needs output_dir): checkpoints as the Trainer does by default (wall time, a stop
    signal, the end) and continues from `output_dir/checkpoint.pt` when there is one, so a killed
    run picks up where it stopped; a finished one returns at once. The checkpoint is then kept (the
    caller deletes it once what depends on it is saved). `stateful`: name -> object with
    state_dict/load_state_dict (e.g. the step callback's BestMaskSelector) saved with every checkpoint.
    resume=False: a fresh run every call, no checkpoint kept.
    """
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset must not be empty")
    if resume and output_dir is None:
        raise ValueError("resume=True needs an output_dir to keep the checkpoint in")
    groups = mask_param_groups(model, lr_scores=settings.lr_scores, lr_weights=settings.lr,
                               weight_decay=settings.weight_decay)
    if not groups:
        raise ValueError("model has no trainable parameters")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", desc).strip("-") or "train"
    run_dir = output_dir or tempfile.mkdtemp(prefix=f"{slug}-")  # the progress bar shows the folder name
    try:
        config = TrainConfig(
            output_dir=run_dir, max_steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
            weight_decay=settings.weight_decay, schedule=settings.schedule, warmup_steps=settings.warmup_steps,
            warmup_ratio=None if settings.warmup_steps is not None else settings.warmup_ratio,
            schedule_steps=settings.schedule_steps,
            max_grad_norm=settings.max_grad_norm or None, clip_mode=settings.clip_mode, adam_eps=settings.adam_eps,
            seed=settings.seed, log_every=1, log_grad_norms=False, device=str(next(model.parameters()).device),
            progress=progress, report_to=settings.report_to, checkpoint_at_end=resume,
            **({} if resume else {"checkpoint_every_seconds": None}))
        callback = None if step_callback is None else (lambda trainer, step: step_callback(step))
        trainer = Trainer(model, config, dataset, collate_fn, loss_fn=loss_fn, param_groups=groups,
                          step_callback=callback)
        trainer.stateful.update(stateful or {})
        trainer.train(resume=resume)
        records = read_jsonl(os.path.join(run_dir, "log.jsonl"))
        losses = [float(r["loss"]) for r in records if r.get("type") == "train"]
    finally:
        if output_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif not resume:  # the log stays; a checkpoint (model + optimizer) is large and not reused
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run_dir, "checkpoint.pt"))
    model.eval()
    return losses
