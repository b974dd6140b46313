"""Order-preserving int32 keys of float32 scores and the radix select's sizes: the pieces of the top-k
select that both the PyTorch twin (topk.py) and the Triton path (topk_launch.py, topk_radix.py) use.
No triton here."""
from __future__ import annotations

import math

import torch

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# (shift, width) of each radix digit of the 32-bit key, most significant first. 8-bit digits: Triton
# lowers tl.histogram to warp ballots where each thread owns NUM_BINS / 32 bins and spends a few
# instructions per owned bin for every 32 elements, so the cost grows with the bin count (256 bins:
# ~2 warp instructions per element, near the memory time on an H100; 2048 bins: ~8x that).
RADIX_LEVELS = ((24, 8), (16, 8), (8, 8), (0, 8))
NUM_BINS = 1 << max(width for _, width in RADIX_LEVELS)
# a block with at most this many elements under the prefix adds them with atomics, not tl.histogram
FEW_MATCHES = 32
# the second-to-last pass copies a segment's remaining keys to a buffer of numel / CANDIDATE_FRACTION
# slots (at least CANDIDATE_MIN) when they fit, so the last level skips reading the tensor again
CANDIDATE_FRACTION = 16
CANDIDATE_MIN = 4096


def _kth_values(kth_keys: torch.Tensor, scope: str) -> torch.Tensor:
    """Smallest kept key per tensor -> float; +inf where nothing is kept (global: one value for all)."""
    if scope == "global" and kth_keys.numel():
        kth_keys = kth_keys.min().expand_as(kth_keys)
    values = key_to_float(kth_keys)
    return torch.where(kth_keys == INT32_MAX, torch.full_like(values, math.inf), values)


def _pruned_max_values(pruned_keys: torch.Tensor, scope: str) -> torch.Tensor:
    """Largest pruned key per tensor -> float; -inf where nothing is pruned (global: one value for all)."""
    if scope == "global" and pruned_keys.numel():
        pruned_keys = pruned_keys.max().expand_as(pruned_keys)
    values = key_to_float(pruned_keys)
    return torch.where(pruned_keys == INT32_MIN, torch.full_like(values, -math.inf), values)


def float_to_key(x: torch.Tensor) -> torch.Tensor:
    """fp32 tensor -> int32 ordered keys (the same map as the kernels' _ordered_key)."""
    bits = x.to(torch.float32).view(torch.int32)
    bits = torch.where(bits == INT32_MIN, torch.zeros_like(bits), bits)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def key_to_float(key: torch.Tensor) -> torch.Tensor:
    bits = torch.where(key < 0, key ^ 0x7FFFFFFF, key)
    return bits.view(torch.float32)

