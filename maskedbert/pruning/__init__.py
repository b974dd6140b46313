"""Pruning logic: IMP rounds with rewinding, mask-training sparsity schedules, a small training loop.

IMP (Frankle & Carbin 2019; Chen et al. 2020 for BERT): each round trains the kept weights, prunes
by magnitude to the next sparsity level (pruned weights stay pruned; exactly round(s * numel)
pruned per matrix, or over all matrices with scope "global"), and rewinds the kept weights to a
saved state (the weights IMP started from, or any saved step). The classifier is rewound only when
asked (the reference code keeps the trained one). Default levels: 10% of the original weights per
round up to 90%, as the reference code; `amount_of="remaining"` prunes a fraction of what is left.

Mask training (Zhao et al. 2020; Liu et al. 2022): weights frozen, real-valued scores trained with
the straight-through estimator, mask = scores > threshold. Sparsity rises on the cubic schedule
s(t) = s_f + (s_i - s_f) (1 - t/T)^3 (70% -> 90% by default, Zhu & Gupta 2017) and is enforced
either as the reference code does, resetting each layer's threshold to the k-th smallest score every
N steps ("threshold_reset"; ties can leave it inexact), or exactly every step ("exact_topk"). The
mask that is saved always has the sparsity the run asked for (`MaskSparsityController.finalize`).
"""
from __future__ import annotations

from maskedbert.kernels.topk import TopkTracker, num_pruned, topk_masks
from maskedbert.patching import magnitude_prune_, masked_modules
from maskedbert.pruning.imp import iterative_magnitude_pruning
from maskedbert.pruning.loop import train_steps
from maskedbert.pruning.rewind import head_parameter_names, load_rewind_state, rewind_weights_, snapshot_weights
from maskedbert.pruning.selection import SELECT_MODES, BestMaskSelector
from maskedbert.pruning.schedules import AMOUNT_OF, CubicSparsitySchedule, cubic_sparsity, imp_sparsity_levels
from maskedbert.pruning.sparsity import (
    SPARSITY_METHODS,
    MaskSparsityController,
    exact_sparsity_,
    reset_thresholds_,
    score_mask_sparsity,
)

__all__ = [
    "AMOUNT_OF", "SELECT_MODES", "SPARSITY_METHODS", "BestMaskSelector", "CubicSparsitySchedule", "MaskSparsityController", "TopkTracker",
    "cubic_sparsity", "exact_sparsity_", "head_parameter_names", "imp_sparsity_levels", "iterative_magnitude_pruning",
    "load_rewind_state", "magnitude_prune_", "masked_modules", "num_pruned", "reset_thresholds_", "rewind_weights_",
    "score_mask_sparsity", "snapshot_weights", "topk_masks", "train_steps",
]
