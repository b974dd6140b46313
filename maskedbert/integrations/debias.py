"""Debiasing losses (product of experts, example reweighting, confidence regularization) for
transformers.Trainer, with bias and teacher probabilities looked up by example id.

    bias = mb.bias.load_probs("bias_probs.jsonl")                 # {example id: [p_0, p_1, p_2]}
    loss = DebiasLoss("poe", bias_probs=bias)                      # or "reweight", "conf_reg" (+ teacher_probs)
    trainer = MaskTrainer(model=model, args=args, train_dataset=train, debias_loss=loss, ...)

The training dataset keeps an id column (`id_column`, default "id"; strings or integers) next to the
tokenized inputs. MaskTrainer keeps that column past `remove_unused_columns`, carries it through the
data collator as a plain list, takes it out of the batch before the forward, and computes the loss
with maskedbert.losses on the logits: training steps use the named loss (with the bias probabilities
annealed when `anneal_floor` is set, Utama et al. 2020), evaluation uses plain cross-entropy. An id
with no probabilities is an error that names it, never a silent row-order match.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from maskedbert import losses
from maskedbert.bias import align_probs
from maskedbert.errors import UsageError

__all__ = ["DebiasLoss", "IdPreservingCollator"]


class DebiasLoss:
    """A maskedbert.losses debiasing loss over probabilities keyed by example id.

    name: "poe", "reweight" or "conf_reg" (aliases of maskedbert.losses accepted; "ce" for a baseline).
    bias_probs / teacher_probs: {id: probability row}, e.g. from mb.bias.load_probs (ids compared as str).
    id_column: the dataset column holding each example's id.
    anneal_floor: anneal p_b ** alpha with alpha from 1 to this floor over the Trainer's max_steps.
    """

    def __init__(self, name: str, *, bias_probs: Mapping[Any, Sequence[float]] | None = None,
                 teacher_probs: Mapping[Any, Sequence[float]] | None = None, id_column: str = "id",
                 anneal_floor: float | None = None):
        try:
            self.name = losses.canonical_loss_name(name)
        except (TypeError, ValueError) as err:
            raise UsageError(f"DebiasLoss: {err}") from None
        if losses.NEEDS_BIAS[self.name] and bias_probs is None:
            raise UsageError(f"DebiasLoss: loss {self.name!r} needs bias_probs={{example id: probabilities}}")
        if losses.NEEDS_TEACHER[self.name] and teacher_probs is None:
            raise UsageError(f"DebiasLoss: loss {self.name!r} needs teacher_probs={{example id: probabilities}}")
        if not isinstance(id_column, str) or not id_column:
            raise UsageError(f"DebiasLoss: id_column must be a column name, got {id_column!r}")
        if anneal_floor is not None:
            if not losses.NEEDS_BIAS[self.name]:
                raise UsageError("DebiasLoss: anneal_floor applies to losses with bias probabilities, "
                                 f"not {self.name!r}")
            try:
                losses.annealing_alpha(0, 1, anneal_floor)
            except ValueError as err:
                raise UsageError(f"DebiasLoss: anneal_floor: {err}") from None
        self.bias_probs = None if bias_probs is None else {str(k): v for k, v in bias_probs.items()}
        self.teacher_probs = None if teacher_probs is None else {str(k): v for k, v in teacher_probs.items()}
        self.id_column, self.anneal_floor = id_column, anneal_floor

    def probs_for(self, ids: Sequence, table: Mapping[str, Sequence[float]], what: str,
                  like: torch.Tensor) -> torch.Tensor:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            rows = align_probs(list(ids), table, name=what)
        except ValueError as err:
            raise UsageError(f"DebiasLoss: {err}") from None
        return rows.to(device=like.device, dtype=like.dtype)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, ids: Sequence | None, *, step: int = 0,
                 total_steps: int = 1) -> torch.Tensor:
        """The loss of one batch; `step` / `total_steps` drive the annealing."""
        if self.name == "ce":
            return losses.cross_entropy(logits, labels)
        if ids is None:
            raise UsageError(f"DebiasLoss: the batch has no {self.id_column!r} column; keep each example's id in "
                             "the training dataset (DebiasLoss(id_column=...) names it)")
        bias = self.probs_for(ids, self.bias_probs, "bias_probs", logits)
        if self.anneal_floor is not None:
            bias = losses.anneal_probs(bias, losses.annealing_alpha(step, max(total_steps, 1), self.anneal_floor))
        if self.name == "conf_reg":
            teacher = self.probs_for(ids, self.teacher_probs, "teacher_probs", logits)
            return losses.confidence_regularization(logits, labels, bias, teacher)
        return losses.get_loss(self.name)(logits, labels, bias)

    def __repr__(self) -> str:
        floor = "" if self.anneal_floor is None else f", anneal_floor={self.anneal_floor}"
        return f"DebiasLoss({self.name!r}, id_column={self.id_column!r}{floor})"


class IdPreservingCollator:
    """Wraps a data collator: takes `id_column` out of every example, collates the rest, and puts the
    ids back into the batch as a list (strings cannot become tensors; the Trainer passes lists along)."""

    def __init__(self, collator: Callable, id_column: str):
        self.collator, self.id_column = collator, id_column

    def __call__(self, features: list[dict]) -> dict:
        if not features or not isinstance(features[0], Mapping) or self.id_column not in features[0]:
            return self.collator(features)
        ids = [f[self.id_column] for f in features]
        batch = self.collator([{k: v for k, v in f.items() if k != self.id_column} for f in features])
        batch[self.id_column] = ids
        return batch
