"""Mask training from a plain Hugging Face script: a transformers.TrainerCallback and optimizer groups.

    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.7))                  # scores mode, weights frozen
    callback = MaskTrainingCallback(initial_sparsity=0.7, final_sparsity=0.9, method="threshold_reset",
                                    reset_every=50)
    optimizer = build_optimizer(model, args, lr_scores=1e-2)            # scores at their own lr, no decay
    trainer = Trainer(model=model, args=args, train_dataset=..., callbacks=[callback],
                      optimizers=(optimizer, None))                       # Trainer builds the lr schedule
    trainer.train()                                   # or trainer.train(resume_from_checkpoint=True)
    mb.save_pretrained(model, "adapter/")             # masks + changed head, over the base checkpoint

The schedule is maskedbert.pruning's: cubic sparsity s(t) from `initial_sparsity` to `final_sparsity`
over the first `ramp_end_fraction` of `state.max_steps` (Zhu & Gupta 2017; SRNet ramps the same way),
applied after every optimizer step (`on_step_end`, the step the Trainer just finished) either by
resetting each layer's threshold to the k-th score every `reset_every` steps (the reference code's
rule; ties can leave it a little above target) or by exact top-k every step. The sparsity is a
function of the global step alone and the scores and thresholds are part of the model's state dict,
so a run resumed from a checkpoint continues the schedule where it stopped.

Every checkpoint folder gets `masks.safetensors` (bit-packed, maskedbert.masks) on save; when training
reaches max_steps the final sparsity is enforced exactly (`finalize`) and the masks are written to
`<output_dir>/masks.safetensors`. Under DDP every rank applies the same deterministic rule to the
same (all-reduced) scores, so masks agree across ranks; only the main process writes files.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from maskedbert.errors import UsageError

__all__ = ["MaskTrainingCallback", "MaskCheckpointCallback", "mask_training_param_groups", "build_optimizer",
           "MASKS_NAME"]

MASKS_NAME = "masks.safetensors"


def mask_training_param_groups(model: nn.Module, *, lr_scores: float, lr: float,
                               weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups for any torch optimizer: mask scores at `lr_scores` with no weight
    decay; trainable matrices at `lr` with `weight_decay`; trainable biases and LayerNorms at `lr`
    without decay (maskedbert.patching.mask_param_groups; each group carries a "name")."""
    from maskedbert.patching import mask_param_groups, masked_modules

    if not masked_modules(model):
        raise UsageError("mask_training_param_groups: model has no masks; call mb.apply_masks_(model, config) first")
    try:
        return mask_param_groups(model, lr_scores=lr_scores, lr_weights=lr, weight_decay=weight_decay)
    except ValueError as err:
        raise UsageError(f"mask_training_param_groups: {err}") from None


def build_optimizer(model: nn.Module, args, *, lr_scores: float) -> torch.optim.Optimizer:
    """torch.optim.AdamW over mask_training_param_groups, with lr, weight decay, betas and eps taken
    from the Trainer's TrainingArguments `args`. Pass it as Trainer(optimizers=(optimizer, None)): the
    Trainer then builds its usual learning-rate schedule on it, scaling every group alike."""
    groups = mask_training_param_groups(model, lr_scores=lr_scores, lr=args.learning_rate,
                                        weight_decay=args.weight_decay)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, weight_decay=args.weight_decay)


class MaskCheckpointCallback(TrainerCallback):
    """Lets transformers.Trainer checkpoint a masked model and writes its masks beside every checkpoint.

    While training runs, the model's own save_pretrained (which maskedbert otherwise refuses on an
    unmerged model, see maskedbert.save_guard) may save the full state, so the Trainer's checkpoints
    hold weights, scores and thresholds and resume exactly. `masks.safetensors` (bit-packed) goes into
    every checkpoint folder and, at the end, into the output folder. Use it as is for IMP rounds
    (IMPRounds) or any masked training that does not need a sparsity schedule; MaskTrainingCallback
    extends it. After training, `trainer.save_model()` refuses again: save with mb.save_pretrained.
    """

    def __init__(self, *, save_masks: bool = True):
        self.save_masks = save_masks
        self.model: nn.Module | None = None
        self._save_guard = contextlib.ExitStack()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from maskedbert.patching import masked_modules
        from maskedbert.save_guard import suspended

        name = type(self).__name__
        if model is None:
            raise UsageError(f"{name}: the Trainer passed no model to the callback")
        if not masked_modules(model):
            raise UsageError(f"{name}: the model has no masks; call mb.apply_masks_(model, config) before "
                             "building the Trainer")
        self.model = model
        self._save_guard.close()  # a previous train() call on the same callback
        self._save_guard.enter_context(suspended(model))  # the Trainer's checkpoints keep scores and thresholds

    def on_save(self, args, state, control, **kwargs):
        if self.save_masks and state.is_world_process_zero and self.model is not None:
            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if os.path.isdir(folder):
                _write_masks(self.model, os.path.join(folder, MASKS_NAME))

    def on_train_end(self, args, state, control, **kwargs):
        self._save_guard.close()
        if self.save_masks and state.is_world_process_zero and self.model is not None:
            _write_masks(self.model, os.path.join(args.output_dir, MASKS_NAME))


class MaskTrainingCallback(MaskCheckpointCallback):
    """Keeps the score masks of a MaskedLinear model on the cubic sparsity schedule inside transformers.Trainer.

    Args:
        initial_sparsity, final_sparsity: the cubic schedule's ends (SRNet: 0.7 -> 0.9 or lower targets).
        method: "threshold_reset" (every `reset_every` steps, as the reference code) or "exact_topk"
            (exact top-k every step).
        reset_every: steps between threshold resets (method "threshold_reset").
        scope: "layer" (each matrix at s(t)) or "global" (all masked weights together).
        ramp_end_fraction: fraction of max_steps at which the final sparsity is reached (held after);
            ignored when `end_step` is given.
        end_step: the step at which the ramp ends, when fixed in steps rather than as a fraction.
        finalize_at_end: enforce final_sparsity exactly when training reaches max_steps.
        save_masks: write masks.safetensors into every checkpoint folder and the output folder.
    After training, `history` lists (step, target, measured sparsity) of every applied step. The
    measured sparsity is also added to the Trainer's logs as mask_sparsity (and mask_target_sparsity).
    """

    def __init__(self, *, initial_sparsity: float = 0.7, final_sparsity: float = 0.9,
                 method: str = "threshold_reset", reset_every: int = 50, scope: str = "layer",
                 ramp_end_fraction: float = 0.8, end_step: int | None = None, finalize_at_end: bool = True,
                 save_masks: bool = True):
        from maskedbert.pruning import SPARSITY_METHODS, CubicSparsitySchedule

        super().__init__(save_masks=save_masks)
        if method not in SPARSITY_METHODS:
            raise UsageError(f"MaskTrainingCallback: method={method!r}; choose one of {SPARSITY_METHODS}")
        if scope not in ("layer", "global"):
            raise UsageError(f"MaskTrainingCallback: scope={scope!r}; choose 'layer' or 'global'")
        if isinstance(reset_every, bool) or not isinstance(reset_every, int) or reset_every < 1:
            raise UsageError(f"MaskTrainingCallback: reset_every={reset_every!r}; give an integer >= 1")
        try:  # validates the sparsities and the ramp end with the library's own checks
            CubicSparsitySchedule(initial_sparsity, final_sparsity, 0, end_step or 1)
            CubicSparsitySchedule.for_training(1, initial_sparsity, final_sparsity, ramp_end_fraction)
        except ValueError as err:
            raise UsageError(f"MaskTrainingCallback: {err}") from None
        self.initial_sparsity, self.final_sparsity = float(initial_sparsity), float(final_sparsity)
        self.method, self.reset_every, self.scope = method, reset_every, scope
        self.ramp_end_fraction, self.end_step = ramp_end_fraction, end_step
        self.finalize_at_end = finalize_at_end
        self.controller = None  # maskedbert.pruning.MaskSparsityController, built at on_train_begin
        self.final_sparsity_measured: float | None = None

    # ---- the schedule ----------------------------------------------------------------------------
    def schedule_for(self, max_steps: int):
        from maskedbert.pruning import CubicSparsitySchedule

        if self.end_step is not None:
            return CubicSparsitySchedule(self.initial_sparsity, self.final_sparsity, 0, self.end_step)
        return CubicSparsitySchedule.for_training(max_steps, self.initial_sparsity, self.final_sparsity,
                                                  self.ramp_end_fraction)

    @property
    def history(self) -> list[tuple[int, float, float]]:
        return [] if self.controller is None else self.controller.history

    # ---- Trainer events --------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from maskedbert.pruning import MaskSparsityController

        if state.max_steps is None or state.max_steps < 1:
            raise UsageError("MaskTrainingCallback: the Trainer's max_steps is unknown; set max_steps or a sized "
                             "train_dataset")
        if model is not None:
            try:
                self.controller = MaskSparsityController(model, self.schedule_for(state.max_steps),
                                                         method=self.method, reset_every=self.reset_every,
                                                         scope=self.scope)
            except ValueError as err:
                raise UsageError(f"MaskTrainingCallback: {err} (the callback trains masks in mode 'scores': "
                                 "mb.apply_masks_(model, mb.MaskConfig(mode='scores', ...)) before the Trainer; "
                                 "for fixed masks use MaskCheckpointCallback)") from None
        super().on_train_begin(args, state, control, model=model, **kwargs)
        if state.global_step == 0:
            self.controller(0)  # start at s(0); a resumed run's checkpoint already holds its thresholds

    def on_step_end(self, args, state, control, **kwargs):
        self.controller(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.controller is None or logs is None or "loss" not in logs:
            return
        from maskedbert.pruning import score_mask_sparsity

        values = {"mask_sparsity": score_mask_sparsity(self.controller.model),
                  "mask_target_sparsity": self.controller.schedule(state.global_step)}
        logs.update(values)  # seen by callbacks after this one
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)  # kept in trainer_state.json

    def on_train_end(self, args, state, control, **kwargs):
        if self.controller is not None and self.finalize_at_end and state.global_step >= state.max_steps:
            self.final_sparsity_measured = self.controller.finalize()  # before the final masks are written
        super().on_train_end(args, state, control, **kwargs)


def _write_masks(model: nn.Module, path: str) -> None:
    from maskedbert.masks import save_masks

    save_masks(model, path)
