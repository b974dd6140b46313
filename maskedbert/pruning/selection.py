"""Mask selection during mask training: keep the mask with the best in-distribution dev metric.

Liu et al. (2022) follow the reference code: evaluate the mask every few steps and keep the best one
seen after 70% of training (llyx97/sparse-and-robust-PLM, mask_trainer.py). `BestMaskSelector` is a
step callback that does this; `ties` chooses the tie rule (maskedbert.metrics.is_new_best). `mode="last"` keeps the final mask and never evaluates.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from maskedbert.choices import SELECT_MODES
from maskedbert.metrics import TIE_RULES, is_new_best
from maskedbert.patching import masked_modules
from maskedbert.pruning._checks import _check_fraction, _check_int

TIES = TIE_RULES


class BestMaskSelector:
    """Step callback: evaluate every `every` steps from `after * total_steps` on (and at the last
    step unless evaluate_last=False), and remember the state with the best metric (higher is better).

    The state kept is what training changes: each score mask's scores and threshold, and every other
    parameter that trains (a task head with train_classifier; all weights in weight training, which
    makes this the best dev checkpoint of a fine-tuning run). `restore()` puts the best state back and
    says which step it came from. ties="later": an equal metric moves the choice to the later step;
    "earlier": only a strictly better one does (the reference's `best_score < value`,
    hg_transformers/trainer.py:601). No evaluation at all keeps the last state.
    """

    def __init__(self, model: nn.Module, evaluate: Callable[[nn.Module], float], *, total_steps: int,
                 every: int, after: float = 0.7, mode: str = "best", ties: str = "later",
                 evaluate_last: bool = True):
        if mode not in SELECT_MODES:
            raise ValueError(f"mode must be one of {SELECT_MODES}, got {mode!r}")
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        self.ties, self.evaluate_last = ties, evaluate_last
        _check_int("total_steps", total_steps, 1)
        _check_int("every", every, 1)
        after = _check_fraction("after", after)
        self.model, self.evaluate, self.mode = model, evaluate, mode
        self.total_steps, self.every = total_steps, every
        self.first_step = max(1, math.ceil(after * total_steps))
        self.history: list[tuple[int, float]] = []  # (step, metric) of every evaluation
        self.best_step: int | None = None
        self.best_metric: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def due(self, step: int) -> bool:
        if self.mode != "best" or step < self.first_step:
            return False
        return step % self.every == 0 or (self.evaluate_last and step == self.total_steps)

    def __call__(self, step: int, *_args) -> None:
        if not self.due(step):
            return
        metric = float(self.evaluate(self.model))
        self.history.append((step, metric))
        if is_new_best(metric, self.best_metric, ties=self.ties):
            self.best_step, self.best_metric = step, metric
            self._best_state = self._state()

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name, layer in masked_modules(self.model).items():
            if layer.scores is not None:
                tensors[f"{name}.scores"] = layer.scores
                tensors[f"{name}.threshold_tensor"] = layer.threshold_tensor
        score_ids = {id(t) for t in tensors.values()}
        for name, param in self.model.named_parameters():
            if param.requires_grad and id(param) not in score_ids:
                tensors[name] = param
        return tensors

    @torch.no_grad()
    def _state(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().clone() for name, t in self._tensors().items()}

    @torch.no_grad()
    def restore(self) -> dict:
        """Load the best state (mode "best" with at least one evaluation); returns the record
        {"select": mode, "selected_step": step or None for the last, "selected_metric": ...}."""
        if self._best_state is None:
            return {"select": self.mode, "selected_step": None, "selected_metric": None}
        for name, tensor in self._tensors().items():
            tensor.copy_(self._best_state[name])
        return {"select": self.mode, "selected_step": self.best_step, "selected_metric": self.best_metric}
