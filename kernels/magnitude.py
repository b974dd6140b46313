"""Magnitude masks for iterative magnitude pruning (IMP), on top of the exact top-k select.

Each round prunes the smallest |W| among the weights still kept; weights pruned in an earlier
round stay pruned (their score is -inf, below every |W|). The reference IMP code
(llyx97/sparse-and-robust-PLM) prunes 10% of the original weights per round up to 90%:
`amount_of="original"` with amount=0.1 per round does that; `amount_of="remaining"` prunes a
fraction of the weights still kept (torch.nn.utils.prune's convention).
"""
from __future__ import annotations

import math

import torch

from ._describe import describe as _describe
from .topk import check_fraction, fractions_per_tensor, num_pruned, topk_select

AMOUNT_OF = ("remaining", "original")


def magnitude_masks(
    weights: list[torch.Tensor],
    amount: float | list[float],
    current_masks: list[torch.Tensor] | None = None,
    *,
    scope: str = "layer",
    amount_of: str = "remaining",
    backend: str = "auto",
) -> list[torch.Tensor]:
    """New bool masks after pruning `amount` more of the weights by magnitude (ties: lower index kept).

    scope="layer": each weight loses num_pruned(base_i, amount_i) weights, where base_i is its kept
    count (amount_of="remaining") or its numel ("original"); `amount` is a float or one per weight.
    scope="global": num_pruned(base, amount) weights go in all, base summed over all weights, and
    `amount` is one float. Asking to prune more than remain raises ValueError.
    """
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError(f"weights must be a non-empty list of tensors, got {type(weights).__name__}")
    if amount_of not in AMOUNT_OF:
        raise ValueError(f"amount_of must be one of {AMOUNT_OF}, got {amount_of!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            raise TypeError(f"weights[{i}] must be a floating-point tensor, got {_describe(w)}")
    current = _check_current(weights, current_masks)
    remaining = _kept_counts(current, weights)
    numels = [w.numel() for w in weights]

    if scope == "global":
        if isinstance(amount, (list, tuple)):
            raise ValueError("amount must be a single number with scope='global', got a list")
        fraction = check_fraction(amount, "amount")
        base = sum(remaining) if amount_of == "remaining" else sum(numels)
        prune = num_pruned(base, fraction)
        _check_enough(prune, sum(remaining), "all weights")
        keep = [sum(remaining) - prune]
    else:
        fractions = fractions_per_tensor(amount, len(weights), "amount", "weights")
        keep = []
        for i, (n, r, f) in enumerate(zip(numels, remaining, fractions)):
            prune = num_pruned(r if amount_of == "remaining" else n, f)
            _check_enough(prune, r, f"weights[{i}]")
            keep.append(r - prune)

    scores = []
    for w, m in zip(weights, current):
        magnitude = w.detach().abs().to(torch.float32)
        # pruned weights score -inf: below any |W|, so they can never come back
        scores.append(magnitude if m is None else magnitude.masked_fill(~m, -math.inf))
    names = [f"weights[{i}]" for i in range(len(weights))]
    masks, _ = topk_select(scores, keep, scope=scope, backend=backend, names=names)
    return masks


def _check_current(weights, current_masks):
    if current_masks is None:
        return [None] * len(weights)
    if not isinstance(current_masks, (list, tuple)) or len(current_masks) != len(weights):
        raise ValueError(f"current_masks must be a list of {len(weights)} bool tensors (one per weight)")
    for i, (w, m) in enumerate(zip(weights, current_masks)):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"current_masks[{i}] must be a bool tensor, got {_describe(m)}")
        if m.shape != w.shape:
            raise ValueError(f"current_masks[{i}] has shape {tuple(m.shape)} but weights[{i}] has {tuple(w.shape)}")
    return [m.to(w.device) for w, m in zip(weights, current_masks)]


def _kept_counts(current, weights) -> list[int]:
    counts = [w.numel() if m is None else None for w, m in zip(weights, current)]
    pending = [m.sum() for m in current if m is not None]
    if pending:  # one host synchronisation for all the counts
        values = iter(torch.stack([p.to(pending[0].device) for p in pending]).tolist())
        counts = [c if c is not None else next(values) for c in counts]
    return counts


def _check_enough(prune: int, remaining: int, what: str) -> None:
    if prune > remaining:
        raise ValueError(f"amount asks to prune {prune} weights of {what} but only {remaining} remain")
