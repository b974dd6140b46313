"""Mask training from a plain Hugging Face script: a transformers.TrainerCallback and optimizer groups.

    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.7))                  # scores mode, weights frozen
    callback = MaskTrainingCallback(initial_sparsity=0.7, final_sparsity=0.9, method="threshold_reset",
                                    reset_every=50)
    trainer = MaskTrainer(model=model, args=args, train_dataset=..., callbacks=[callback],
                          lr_scores=1e-2)             # args.optim's optimizer over maskedbert's groups
    trainer.train()                                   # or trainer.train(resume_from_checkpoint=True)
    trainer.save_model()                              # the mask adapter (masks + changed head + model card)

With a plain `transformers.Trainer`, pass the optimizer through the Trainer's own arguments:
`Trainer(..., optimizer_cls_and_kwargs=mask_optimizer_cls_and_kwargs(args, lr_scores=1e-2))` (or
`optimizers=(build_optimizer(model, args, lr_scores=1e-2), None)`). The callback refuses to start when
the optimizer does not train the scores at their own rate: the Trainer's default optimizer puts them
beside the weights at the weights' learning rate (5e-5) with weight decay, where scores that live on
the threshold's scale (1e-2) never cross it, so the masks would silently stay as they started.
MaskTrainer also sends the mask statistics through `Trainer.log`, before the report_to callbacks
(TensorBoard, W&B, ...) see the logs; a plain Trainer runs those callbacks before this one.

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

from maskedbert.adapters import SPARSITY_CONTROLLED_ATTR
from maskedbert.errors import UsageError
from maskedbert.log import logger
from maskedbert.masks import save_masks
from maskedbert.patching import mask_param_groups, masked_modules
from maskedbert.pruning import SPARSITY_METHODS, CubicSparsitySchedule, MaskSparsityController, score_mask_sparsity
from maskedbert.save_guard import suspended

__all__ = ["MaskTrainingCallback", "MaskCheckpointCallback", "mask_training_param_groups", "build_optimizer",
           "mask_optimizer_cls_and_kwargs", "MaskOptimizerFactory", "optimizer_cls_and_kwargs_for", "MASKS_NAME",
           "SCORES_GROUP"]

MASKS_NAME = "masks.safetensors"
SCORES_GROUP = "mask_scores"


def mask_training_param_groups(model: nn.Module, *, lr_scores: float, lr: float,
                               weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups for any torch optimizer: trainable matrices at `lr` with
    `weight_decay`; trainable biases and LayerNorms at `lr` without decay; mask scores at `lr_scores`
    with no weight decay, last, so that the Trainer's `learning_rate` (its first group's) is the
    weights' rate (maskedbert.patching.mask_param_groups; each group carries a "name")."""
    if not masked_modules(model):
        raise UsageError("mask_training_param_groups: model has no masks; call mb.apply_masks_(model, config) first")
    try:
        groups = mask_param_groups(model, lr_scores=lr_scores, lr_weights=lr, weight_decay=weight_decay)
    except ValueError as err:
        raise UsageError(f"mask_training_param_groups: {err}") from None
    return [g for g in groups if g["name"] != SCORES_GROUP] + [g for g in groups if g["name"] == SCORES_GROUP]


def optimizer_cls_and_kwargs_for(args, model: nn.Module | None = None) -> tuple[type, dict[str, Any]]:
    """The optimizer class and keyword arguments the Trainer would build for `args.optim` (AdamW
    variants, Adafactor, SGD, ...), refusing those that choose their own parameter groups."""
    from transformers import Trainer  # optional dependency: transformers.Trainer needs accelerate

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = dict(kwargs)
    own_groups = sorted({"params", "model", "optimizer_dict"} & set(kwargs))
    if own_groups or not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise UsageError(f"args.optim={args.optim!r} builds its own parameter groups, so maskedbert cannot give the "
                         "mask scores their own learning rate; use an optimizer such as 'adamw_torch'")
    return cls, kwargs


def build_optimizer(model: nn.Module, args, *, lr_scores: float) -> torch.optim.Optimizer:
    """The optimizer `args.optim` names (TrainingArguments: adamw_torch by default; lr, betas, eps,
    optim_args taken from `args`) over mask_training_param_groups. Pass it as
    Trainer(optimizers=(optimizer, None)): the Trainer builds its usual schedule on it, scaling every
    group alike. MaskTrainer(lr_scores=...) and mask_optimizer_cls_and_kwargs build the same."""
    cls, kwargs = optimizer_cls_and_kwargs_for(args, model)
    groups = mask_training_param_groups(model, lr_scores=lr_scores, lr=args.learning_rate,
                                        weight_decay=args.weight_decay)
    return cls(groups, **kwargs)


class MaskOptimizerFactory:
    """An optimizer factory in transformers' sense: `Trainer(optimizer_cls_and_kwargs=(MaskOptimizerFactory,
    {"args": args, "lr_scores": ...}))` makes the Trainer call `MaskOptimizerFactory()(model, **kwargs)`,
    which is build_optimizer(model, args, lr_scores=...). Use mask_optimizer_cls_and_kwargs to build the pair."""

    def __init__(self, *unexpected, **unexpected_kwargs):
        if unexpected or unexpected_kwargs:  # a transformers that treats it as an optimizer class
            raise UsageError("this transformers version does not build optimizers from factories: use "
                             "maskedbert.integrations.MaskTrainer(lr_scores=...) or "
                             "Trainer(optimizers=(build_optimizer(model, args, lr_scores=...), None))")

    def __call__(self, model: nn.Module, *, args, lr_scores: float) -> torch.optim.Optimizer:
        return build_optimizer(model, args, lr_scores=lr_scores)


def mask_optimizer_cls_and_kwargs(args, *, lr_scores: float) -> tuple[type, dict[str, Any]]:
    """`Trainer(optimizer_cls_and_kwargs=...)` value that makes a plain transformers.Trainer build
    build_optimizer(model, args, lr_scores=lr_scores) itself (args.optim honoured)."""
    optimizer_cls_and_kwargs_for(args)  # refuse an unusable args.optim now, not at train()
    if isinstance(lr_scores, bool) or not isinstance(lr_scores, (int, float)) or not lr_scores > 0:
        raise UsageError(f"mask_optimizer_cls_and_kwargs: lr_scores must be a positive number, got {lr_scores!r}")
    return MaskOptimizerFactory, {"args": args, "lr_scores": float(lr_scores)}


def check_optimizer_trains_scores(model: nn.Module, optimizer, who: str) -> None:
    """UsageError unless every mask score is in `optimizer`, in groups that hold nothing else."""
    scores = {id(m.scores) for m in masked_modules(model).values() if m.scores is not None}
    if not scores or optimizer is None:
        return
    groups = getattr(optimizer, "optimizer", optimizer).param_groups  # accelerate wraps the torch optimizer
    held = [{id(p) for p in g["params"]} for g in groups]
    in_optimizer = set().union(*held) & scores
    mixed = [g for g, ids in zip(groups, held) if ids & scores and ids - scores]
    if len(in_optimizer) == len(scores) and not mixed:
        return
    problem = ("the Trainer's optimizer holds none of the mask scores" if not in_optimizer else
               f"the Trainer's optimizer holds {len(in_optimizer)} of {len(scores)} mask scores" if
               len(in_optimizer) < len(scores) else
               f"the Trainer's optimizer trains the mask scores in one group with other parameters, at "
               f"lr={mixed[0].get('lr')} with weight_decay={mixed[0].get('weight_decay')} (the Trainer's default "
               "groups); scores live on the threshold's scale and need their own, larger rate")
    raise UsageError(
        f"{who}: {problem}, so the masks would not train. Build the optimizer with maskedbert's groups: "
        "maskedbert.integrations.MaskTrainer(..., lr_scores=1e-2), or Trainer(..., optimizer_cls_and_kwargs="
        "mask_optimizer_cls_and_kwargs(args, lr_scores=1e-2)), or Trainer(..., optimizers=(build_optimizer(model, "
        "args, lr_scores=1e-2), None)). (check_optimizer=False skips this check.)")


class MaskCheckpointCallback(TrainerCallback):
    """Lets transformers.Trainer checkpoint a masked model and writes its masks beside every checkpoint.

    A masked model's own save_pretrained writes its mask adapter (maskedbert.save_guard). While
    training runs it also writes the full state, so the Trainer's checkpoints hold weights, scores and
    thresholds (and resume exactly) beside the adapter. `masks.safetensors` (bit-packed) goes into
    every checkpoint folder and, at the end, into the output folder. Use it as is for IMP rounds
    (IMPRounds) or any masked training that does not need a sparsity schedule; MaskTrainingCallback
    extends it. After training, `trainer.save_model()` writes the adapter alone.
    """

    def __init__(self, *, save_masks: bool = True):
        self.save_masks = save_masks
        self.model: nn.Module | None = None
        self._save_guard = contextlib.ExitStack()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
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
        check_optimizer: refuse to start unless the Trainer's optimizer trains every score in groups of
            their own (check_optimizer_trains_scores).
    After training, `history` lists (step, target, measured sparsity) of every applied step. The
    measured sparsity goes into the Trainer's logs as mask_sparsity (and mask_target_sparsity): through
    Trainer.log under MaskTrainer, so every report_to backend gets them; with a plain Trainer only the
    callbacks after this one and trainer_state.json do (a warning says so when report_to is set).
    """

    def __init__(self, *, initial_sparsity: float = 0.7, final_sparsity: float = 0.9,
                 method: str = "threshold_reset", reset_every: int = 50, scope: str = "layer",
                 ramp_end_fraction: float = 0.8, end_step: int | None = None, finalize_at_end: bool = True,
                 save_masks: bool = True, check_optimizer: bool = True):
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
        self.check_optimizer = check_optimizer
        self.logs_through_trainer = False  # set by MaskTrainer, which adds mask_logs() in Trainer.log
        self.controller = None  # maskedbert.pruning.MaskSparsityController, built at on_train_begin
        self.final_sparsity_measured: float | None = None

    # ---- the schedule ----------------------------------------------------------------------------
    def schedule_for(self, max_steps: int):
        if self.end_step is not None:
            return CubicSparsitySchedule(self.initial_sparsity, self.final_sparsity, 0, self.end_step)
        return CubicSparsitySchedule.for_training(max_steps, self.initial_sparsity, self.final_sparsity,
                                                  self.ramp_end_fraction)

    @property
    def history(self) -> list[tuple[int, float, float]]:
        return [] if self.controller is None else self.controller.history

    def mask_logs(self, step: int) -> dict[str, float]:
        """mask_sparsity (measured over every score mask) and mask_target_sparsity (the schedule's) at `step`."""
        if self.controller is None:
            return {}
        return {"mask_sparsity": score_mask_sparsity(self.controller.model),
                "mask_target_sparsity": self.controller.schedule(step)}

    # ---- Trainer events --------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.max_steps is None or state.max_steps < 1:
            raise UsageError("MaskTrainingCallback: the Trainer's max_steps is unknown; set max_steps or a sized "
                             "train_dataset")
        if model is not None and self.check_optimizer:
            check_optimizer_trains_scores(model, kwargs.get("optimizer"), "MaskTrainingCallback")
        report_to = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])
        backends = [r for r in report_to if r != "none"]
        if backends and not self.logs_through_trainer:
            logger.warning("MaskTrainingCallback: with a plain transformers.Trainer the report_to callbacks (%s) run "
                           "before this one and never see mask_sparsity; use maskedbert.integrations.MaskTrainer "
                           "(or MaskTrainerMixin) to log it through Trainer.log", ", ".join(backends))
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
        setattr(model, SPARSITY_CONTROLLED_ATTR, True)  # the schedule sets the sparsity, not MaskConfig's
        if state.global_step == 0:
            self.controller(0)  # start at s(0); a resumed run's checkpoint already holds its thresholds

    def on_step_end(self, args, state, control, **kwargs):
        self.controller(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.logs_through_trainer or self.controller is None or logs is None or "loss" not in logs:
            return
        values = self.mask_logs(state.global_step)
        logs.update(values)  # seen by callbacks after this one
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)  # kept in trainer_state.json

    def on_train_end(self, args, state, control, **kwargs):
        if self.controller is not None and self.finalize_at_end and state.global_step >= state.max_steps:
            self.final_sparsity_measured = self.controller.finalize()  # before the final masks are written
        super().on_train_end(args, state, control, **kwargs)


def _write_masks(model: nn.Module, path: str) -> None:
    save_masks(model, path)
