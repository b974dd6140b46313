"""Iterative magnitude pruning rounds (Frankle & Carbin 2019; Chen et al. 2020 for BERT)."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from maskedbert.kernels.topk import num_pruned
from maskedbert.patching import magnitude_prune_, masked_modules
from maskedbert.pruning._checks import _check_fraction, _check_int
from maskedbert.pruning.rewind import rewind_weights_, snapshot_weights


def _check_exact(model: nn.Module, level: float, scope: str) -> float:
    layers = list(masked_modules(model).values())
    pruned = [layer.weight.numel() - int(layer.mask().sum()) for layer in layers]
    numels = [layer.weight.numel() for layer in layers]
    if scope == "global":
        expected_ok = sum(pruned) == num_pruned(sum(numels), level)
    else:
        expected_ok = all(p == num_pruned(n, level) for p, n in zip(pruned, numels))
    if not expected_ok:
        raise RuntimeError(f"IMP round did not reach sparsity {level} exactly (pruned {pruned} of {numels})")
    return sum(pruned) / sum(numels)


def iterative_magnitude_pruning(
    model: nn.Module,
    train_round: Callable[[nn.Module, int], object],
    levels: Iterable[float],
    *,
    scope: str = "layer",
    rewind_state: Mapping[str, torch.Tensor] | None = None,
    rewind_classifier: bool = False,
    on_level: Callable[[nn.Module, float, int], object] | None = None,
    start_round: int = 0,
    rewind: bool = True,
) -> list[dict]:
    """Run IMP rounds on a model whose layers are MaskedLinear in mode "fixed".

    Round r: `train_round(model, r)` trains the kept weights (build the optimizer and schedule
    inside it: they are rebuilt every round), then magnitude pruning to levels[r] (exact), then the
    weights are rewound to `rewind_state` (default: a snapshot taken before round 0), and
    `on_level(model, level, r)` sees the new mask on rewound weights (save the mask there).
    `start_round` resumes an interrupted run: the model must hold the state `on_level` saw after
    round start_round - 1 (and `rewind_state` the original snapshot); earlier rounds are skipped.
    rewind=False: no rewinding; each round trains on from the weights the last round trained (Liu et
    al. 2022, Sec. 2.2.1, for pruning a fine-tuned model). `rewind_state` is then unused.
    Returns one record per round run: level, measured sparsity.
    """
    levels = [_check_fraction("levels[i]", s, upper_open=True) for s in levels]
    if not levels:
        raise ValueError("levels must not be empty")
    if any(b < a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must be non-decreasing (pruned weights stay pruned), got {levels}")
    layers = masked_modules(model)
    if not layers or any(m.mode != "fixed" for m in layers.values()):
        raise ValueError("IMP needs MaskedLinear layers in mode 'fixed' "
                         "(apply_masks_(model, MaskConfig(mode='fixed')))")
    _check_int("start_round", start_round, 0)
    if start_round and rewind and rewind_state is None:
        raise ValueError("start_round > 0 needs the original rewind_state (the model now holds pruned weights)")
    state = None
    if rewind:
        state = snapshot_weights(model) if rewind_state is None else dict(rewind_state)
    records = []
    for r, level in enumerate(levels):
        if r < start_round:
            continue
        train_round(model, r)
        magnitude_prune_(model, level, scope)
        measured = _check_exact(model, level, scope)
        if state is not None:
            rewind_weights_(model, state, rewind_classifier=rewind_classifier)
        records.append({"round": r, "level": level, "sparsity": measured})
        if on_level is not None:
            on_level(model, level, r)
    return records
