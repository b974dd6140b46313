"""How much of a score mask each optimizer step changes: the statistic that shows a mask shock.

With scores at two levels (0 and 2*tau) and Adam's sign-like early updates, every score with a
consistent gradient crosses the threshold in the same step; `MaskFlipTracker` measures that, as a
step callback run after the sparsity controller (so threshold resets count as the step's flips).
"""
from __future__ import annotations

import torch
from torch import nn

from maskedbert.patching import masked_modules


class MaskFlipTracker:
    """Step callback: the fraction of all score-mask entries that differ from the previous step's mask.

    The first comparison is against the mask at construction (the initial mask). Counts stay on the
    device until `fractions` is read, so a step waits for nothing.
    """

    def __init__(self, model: nn.Module):
        self.layers = {n: m for n, m in masked_modules(model).items() if m.mode == "scores"}
        if not self.layers:
            raise ValueError("model has no MaskedLinear layers in mode 'scores' (apply_masks_ with mode='scores')")
        self.total = sum(layer.weight.numel() for layer in self.layers.values())
        self._previous = {name: layer.mask().clone() for name, layer in self.layers.items()}
        self._changed: list[torch.Tensor] = []

    @torch.no_grad()
    def __call__(self, step: int, *_args) -> None:
        changed = None
        for name, layer in self.layers.items():
            mask = layer.mask()
            count = (mask != self._previous[name]).sum()
            changed = count if changed is None else changed + count.to(changed.device)
            self._previous[name] = mask
        self._changed.append(changed)

    @property
    def fractions(self) -> list[float]:
        """Per step (in call order), the fraction of mask entries flipped (reading it waits for the device)."""
        return [int(c) / self.total for c in self._changed]

    def shock_fraction(self, above: float = 0.01) -> float:
        """Fraction of steps on which more than `above` of the mask flipped (0.0 with no steps)."""
        if not 0.0 <= above < 1.0:
            raise ValueError(f"above must be a fraction in [0, 1), got {above!r}")
        values = self.fractions
        return sum(v > above for v in values) / len(values) if values else 0.0
