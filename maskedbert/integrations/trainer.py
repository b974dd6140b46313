"""MaskTrainer: transformers.Trainer with mask-training optimizer groups, mask statistics in Trainer.log,
and debiasing losses. MaskTrainerMixin gives the same to a Trainer subclass of your own.

    trainer = MaskTrainer(model=model, args=args, train_dataset=train, callbacks=[MaskTrainingCallback(...)],
                          lr_scores=1e-2, debias_loss=DebiasLoss("poe", bias_probs=probs))
    trainer.train()
    trainer.save_model()        # the mask adapter: mask_config.json, masks, changed parameters, README.md

- lr_scores: the optimizer is the one `args.optim` names (lr, betas, eps, weight decay from `args`),
  over maskedbert's groups: weights with decay, biases/LayerNorms without, scores at lr_scores
  without decay (maskedbert.integrations.build_optimizer).
- Every Trainer.log call with a training loss gets mask_sparsity / mask_target_sparsity (from the
  MaskTrainingCallback among the callbacks, or the measured score-mask sparsity) and
  learning_rate_<group> for every named optimizer group, before any report_to callback sees it.
  `learning_rate` stays the weights' rate.
- debias_loss: a DebiasLoss; see maskedbert.integrations.debias.

    class MyTrainer(MaskTrainerMixin, SFTTrainer): ...   # the mixin goes first
"""
from __future__ import annotations

import os
from typing import Any

import transformers

from maskedbert import losses
from maskedbert.adapter_card import write_model_card
from maskedbert.adapters import CONFIG_NAME, read_adapter_config
from maskedbert.errors import UsageError
from maskedbert.patching import masked_modules
from maskedbert.pruning import score_mask_sparsity

from .debias import DebiasLoss, IdPreservingCollator
from .hf_trainer import MaskTrainingCallback, build_optimizer

__all__ = ["MaskTrainer", "MaskTrainerMixin"]


class MaskTrainerMixin:
    """Mask-training additions for any transformers.Trainer subclass (list it before the Trainer class)."""

    def __init__(self, *args, lr_scores: float | None = None, debias_loss: DebiasLoss | None = None, **kwargs):
        if lr_scores is not None and (isinstance(lr_scores, bool) or not isinstance(lr_scores, (int, float))
                                      or not lr_scores > 0):
            raise UsageError(f"{type(self).__name__}: lr_scores must be a positive number, got {lr_scores!r}")
        if debias_loss is not None and not isinstance(debias_loss, DebiasLoss):
            raise UsageError(f"{type(self).__name__}: debias_loss must be a maskedbert.integrations.DebiasLoss, "
                             f"got {type(debias_loss).__name__}")
        super().__init__(*args, **kwargs)
        self.lr_scores, self.debias_loss = lr_scores, debias_loss
        self._group_rates = _GroupLearningRates()
        self.add_callback(self._group_rates)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, MaskTrainingCallback):
                callback.logs_through_trainer = True
        if debias_loss is not None:
            self.data_collator = IdPreservingCollator(self.data_collator, debias_loss.id_column)
            self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by accumulation steps

    # ---- optimizer ------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        target = self.model if model is None else model
        if self.optimizer is None and masked_modules(target):
            if self.lr_scores is None and any(m.scores is not None for m in masked_modules(target).values()):
                raise UsageError(f"{type(self).__name__}: the model has score masks; pass lr_scores= (their learning "
                                 "rate, e.g. 1e-2 for scores on the threshold's scale)")
            self.optimizer = build_optimizer(target, self.args, lr_scores=self.lr_scores or 0.0)
        return super().create_optimizer(model)

    # ---- logging --------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs.update(self._mask_logs())
        super().log(logs, *args, **kwargs)

    def _mask_logs(self) -> dict[str, float]:
        values: dict[str, Any] = {}
        callback = next((c for c in self.callback_handler.callbacks if isinstance(c, MaskTrainingCallback)), None)
        if callback is not None and callback.controller is not None:
            values.update(callback.mask_logs(self.state.global_step))
        elif any(m.scores is not None for m in masked_modules(self.model).values()):
            values["mask_sparsity"] = score_mask_sparsity(self.model)
        values.update({f"learning_rate_{name}": lr for name, lr in self._group_rates.rates.items()})
        return values

    # ---- model card -----------------------------------------------------------------------------
    def create_model_card(self, *args, **kwargs):
        """The Trainer's training summary, with the mask adapter's metadata and loading section kept."""
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero() and os.path.isfile(os.path.join(self.args.output_dir, CONFIG_NAME)):
            write_model_card(self.args.output_dir, read_adapter_config(self.args.output_dir),
                             repo_id=getattr(self, "hub_model_id", None))

    # ---- debiasing loss -------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.debias_loss is not None and self.debias_loss.id_column not in self._signature_columns:
            self._signature_columns.append(self.debias_loss.id_column)  # remove_unused_columns keeps the ids

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.debias_loss is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs = dict(inputs)  # prediction_step reads the labels from its own dict afterwards
        ids = inputs.pop(self.debias_loss.id_column, None)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise UsageError(f"{type(self).__name__}: debias_loss needs 'labels' in every batch")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if model.training:
            loss = self.debias_loss(logits, labels, ids, step=self.state.global_step,
                                    total_steps=self.state.max_steps or 1)
        else:  # evaluation: the task's plain cross-entropy
            loss = losses.cross_entropy(logits, labels)
        return (loss, outputs) if return_outputs else loss


class _GroupLearningRates(transformers.TrainerCallback):
    """The learning rate of every named optimizer group at the last optimizer step (before the
    scheduler moves it on), as the Trainer's own `learning_rate` reports the rate the step used."""

    def __init__(self):
        self.rates: dict[str, float] = {}

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        groups = getattr(optimizer, "optimizer", optimizer).param_groups if optimizer is not None else []
        self.rates = {g["name"]: float(g["lr"]) for g in groups if isinstance(g.get("name"), str)}


class MaskTrainer(MaskTrainerMixin, transformers.Trainer):
    """transformers.Trainer with MaskTrainerMixin (lr_scores=, debias_loss=)."""
