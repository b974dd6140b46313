"""A small training loop over maskedbert's Trainer for fine-tuning, IMP rounds and mask training."""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable

from torch import nn

from maskedbert.patching import mask_param_groups
from maskedbert.train.runlog import read_jsonl
from maskedbert.train.trainer import TrainConfig, Trainer


def train_steps(model: nn.Module, dataset, collate_fn, loss_fn: Callable, config: TrainConfig, *, lr_scores: float,
                step_callback: Callable[[int], object] | None = None, desc: str = "train", resume: bool = False,
                stateful: dict | None = None) -> list[float]:
    """Train `model` with maskedbert's Trainer as `config` says; returns each optimizer step's loss.

    `config` holds every training setting (steps, batch size, learning rate, Adam, warmup, schedule,
    clipping, seed, progress, report_to) and the run folder, `config.output_dir`, which keeps the
    Trainer's log (log.jsonl). The one setting beyond it is `lr_scores`, the mask scores' learning rate:
    parameters train as their requires_grad says (mask scores, weights and head by the MaskConfig), in
    the groups of patching.mask_param_groups (scores at lr_scores without decay, the rest at config.lr).
    The loop sets the fields it depends on itself: a log record every step without gradient norms
    (the losses are read back from the log), the model's device, and checkpointing by `resume`. The
    optimizer and schedule are new on every call (IMP rebuilds them each round). `step_callback(step)`
    runs after every optimizer step (step counts from 1), e.g. a MaskSparsityController. `desc` names
    the run in errors.

    resume=True: checkpoints as the Trainer does by default (wall time, a stop signal, the end) and
    continues from `output_dir/checkpoint.pt` when there is one, so a killed run picks up where it
    stopped; a finished one returns at once. The checkpoint is then kept (the caller deletes it once
    what depends on it is saved). `stateful`: name -> object with state_dict/load_state_dict (e.g.
    the step callback's BestMaskSelector) saved with every checkpoint. resume=False: a fresh run every
    call, no checkpoint kept.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"{desc}: config must be a TrainConfig, got {type(config).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{desc}: dataset must not be empty")
    groups = mask_param_groups(model, lr_scores=lr_scores, lr_weights=config.lr, weight_decay=config.weight_decay)
    if not groups:
        raise ValueError(f"{desc}: model has no trainable parameters")
    config = dataclasses.replace(
        config, log_every=1, log_grad_norms=False, device=str(next(model.parameters()).device),
        checkpoint_at_end=resume,
        checkpoint_every_seconds=config.checkpoint_every_seconds if resume else None)
    try:
        callback = None if step_callback is None else (lambda trainer, step: step_callback(step))
        trainer = Trainer(model, config, dataset, collate_fn, loss_fn=loss_fn, param_groups=groups,
                          step_callback=callback)
        trainer.stateful.update(stateful or {})
        trainer.train(resume=resume)
        records = read_jsonl(os.path.join(config.output_dir, "log.jsonl"))
        losses = [float(r["loss"]) for r in records if r.get("type") == "train"]
    finally:
        if not resume:  # the log stays; a checkpoint (model + optimizer) is large and not reused
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(config.output_dir, "checkpoint.pt"))
    model.eval()
    return losses
