"""Iterative magnitude pruning between `transformers.Trainer.train()` rounds.

    mb.apply_masks_(model, mb.MaskConfig(mode="fixed"))   # fixed masks, the weights train
    imp = IMPRounds(model, final_sparsity=0.9, per_round=0.1)   # snapshot of the weights to rewind to
    for level in imp.levels:
        # a new Trainer (optimizer, schedule) per round; the callback lets it checkpoint the masked model
        Trainer(model=model, args=args, train_dataset=train, callbacks=[MaskCheckpointCallback()]).train()
        imp.prune_and_rewind()        # magnitude-prune to `level` (exact), rewind the kept weights
        mb.save_pretrained(model, f"imp/level-{level:.2f}")

Each round follows maskedbert.pruning.iterative_magnitude_pruning: prune by |W| to the next level
(pruned weights stay pruned; exactly round(level * numel) per matrix, or over all matrices with
scope "global"), then rewind every weight except the task head (unless rewind_classifier) to the
snapshot taken when IMPRounds was built, or to `rewind_state` (e.g. from
maskedbert.pruning.load_rewind_state for rewinding to an early training step).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from maskedbert.errors import UsageError
from maskedbert.kernels.topk import num_pruned
from maskedbert.patching import magnitude_prune_, masked_modules
from maskedbert.pruning import imp_sparsity_levels, rewind_weights_, snapshot_weights

__all__ = ["IMPRounds"]


class IMPRounds:
    """Prune / rewind bookkeeping for IMP driven from a Hugging Face training script.

    levels: explicit target sparsities; default maskedbert.pruning.imp_sparsity_levels(final_sparsity,
    per_round, amount_of) (10% of the original weights per round up to 90%, the reference code's rule).
    `records` lists what every round did; `round` is the next round's index.
    """

    def __init__(self, model: nn.Module, *, final_sparsity: float = 0.9, per_round: float = 0.1,
                 amount_of: str = "original", levels: list[float] | None = None, scope: str = "layer",
                 rewind_state: Mapping[str, torch.Tensor] | None = None, rewind_classifier: bool = False):
        layers = masked_modules(model)
        if not layers or any(m.mode != "fixed" for m in layers.values()):
            raise UsageError("IMPRounds: model needs MaskedLinear layers in mode 'fixed' "
                             "(mb.apply_masks_(model, mb.MaskConfig(mode='fixed')))")
        if scope not in ("layer", "global"):
            raise UsageError(f"IMPRounds: scope={scope!r}; choose 'layer' or 'global'")
        try:
            self.levels = ([float(x) for x in levels] if levels is not None
                           else imp_sparsity_levels(final_sparsity, per_round, amount_of))
        except (TypeError, ValueError) as err:
            raise UsageError(f"IMPRounds: {err}") from None
        if not self.levels or any(not 0.0 <= x < 1.0 for x in self.levels) or self.levels != sorted(self.levels):
            raise UsageError(f"IMPRounds: levels={self.levels}; give a non-empty non-decreasing list in [0, 1) "
                             "(pruned weights stay pruned)")
        self.model, self.scope, self.rewind_classifier = model, scope, rewind_classifier
        self.rewind_state = snapshot_weights(model) if rewind_state is None else dict(rewind_state)
        self.round = 0
        self.records: list[dict] = []

    @property
    def done(self) -> bool:
        return self.round >= len(self.levels)

    def prune_and_rewind(self, level: float | None = None) -> dict:
        """End the current round: prune to `level` (default: this round's level), rewind; returns its record."""
        if level is None:
            if self.done:
                raise UsageError(f"IMPRounds: all {len(self.levels)} rounds are done (levels {self.levels})")
            level = self.levels[self.round]
        try:
            magnitude_prune_(self.model, level, self.scope)
        except ValueError as err:
            raise UsageError(f"IMPRounds.prune_and_rewind: {err}") from None
        layers = list(masked_modules(self.model).values())
        numels = [m.weight.numel() for m in layers]
        pruned = [n - int(m.mask().sum()) for n, m in zip(numels, layers)]
        exact = (sum(pruned) == num_pruned(sum(numels), level) if self.scope == "global"
                 else all(p == num_pruned(n, level) for p, n in zip(pruned, numels)))
        if not exact:  # magnitude_prune_ promises this; a failure here is a bug, not a user mistake
            raise RuntimeError(f"IMP round {self.round} did not reach sparsity {level} exactly")
        rewind_weights_(self.model, self.rewind_state, rewind_classifier=self.rewind_classifier)
        record = {"round": self.round, "level": float(level), "sparsity": sum(pruned) / sum(numels)}
        self.records.append(record)
        self.round += 1
        return record
