"""Exact top-k masks for many tensors at once: radix select over order-preserving float bits.

Rule (the same for the Triton kernels and the PyTorch twin):
- a tensor of n elements at sparsity s keeps exactly n - num_pruned(n, s) elements, where
  num_pruned(n, s) = round(s * n) with Python's round (halves go to the even integer);
- the kept elements are the largest scores; among equal scores the lower flat (row-major) index
  wins. With scope="global" the flat index runs over the tensors concatenated in list order.
  -0.0 and +0.0 count as equal; NaN scores are an error. Scores are compared as float32 (fp16 and
  bf16 convert exactly; float64 is rounded to float32 first).

The Triton kernels live in topk_radix.py (launched from topk_launch.py); this file holds the rule,
the PyTorch twin and the API.
"""
from __future__ import annotations

import math
from numbers import Real

import torch

from ._runtime import resolve_backend
from .topk_keys import INT32_MAX, INT32_MIN, _kth_values, _pruned_max_values, float_to_key, key_to_float  # noqa: F401
from .topk_launch import topk_select_triton

# float64 is compared after rounding to float32 (fp16/bf16 convert exactly)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SCOPES = ("layer", "global")


def num_pruned(numel: int, sparsity: float) -> int:
    """How many of `numel` elements a mask at `sparsity` prunes: round(sparsity * numel)."""
    return int(round(sparsity * numel))


# ----------------------------------------------------------------------------- PyTorch twin


def _topk_flat_torch(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of the k largest (lower index first among equals) and the smallest kept key."""
    n = flat.numel()
    if k == 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device), torch.tensor(
            INT32_MAX, dtype=torch.int32, device=flat.device
        )
    # unique int64 composite: key in the high half, reversed index in the low half
    index = torch.arange(n, dtype=torch.int64, device=flat.device)
    composite = float_to_key(flat).to(torch.int64) * 2**32 + (2**32 - 1 - index)
    # the k-th largest composite is the (n-k+1)-th smallest; every composite at or above it is kept
    kth = torch.kthvalue(composite, n - k + 1).values
    return composite >= kth, (kth >> 32).to(torch.int32)


def topk_select_torch(tensors: list[torch.Tensor], keep: list[int], scope: str, names: list[str],
                      bracket=None, hits: torch.Tensor | None = None, pruned_max: bool = False):
    """PyTorch twin of `topk_select_triton` (same arguments, same results; the bracket, a speed
    hint for the Triton passes, is ignored and `hits` is left unchanged)."""
    flats = [t.detach().reshape(-1).to(torch.float32) for t in tensors]
    for flat, name in zip(flats, names):
        nans = int(torch.isnan(flat).sum())
        if nans:
            raise ValueError(f"{name} contains {nans} NaN values; scores must not be NaN")
    device = tensors[0].device
    if scope == "layer":
        results = [_topk_flat_torch(f, k) for f, k in zip(flats, keep)]
        flat_masks = [r[0] for r in results]
        kth_keys = torch.stack([r[1] for r in results]) if results else torch.empty(0, dtype=torch.int32)
    else:
        mask, kth_key = _topk_flat_torch(torch.cat(flats), keep[0])
        flat_masks = list(mask.split([f.numel() for f in flats]))
        kth_keys = kth_key.expand(len(flats))
    masks = [m.view(t.shape) for m, t in zip(flat_masks, tensors)]
    if not pruned_max:
        return masks, _kth_values(kth_keys.to(device), scope)
    pruned_keys = torch.stack([
        torch.where(m, INT32_MIN, float_to_key(f)).amax() if f.numel() else torch.tensor(INT32_MIN, dtype=torch.int32)
        for f, m in zip(flats, flat_masks)
    ]).to(device=device, dtype=torch.int32) if flats else torch.empty(0, dtype=torch.int32, device=device)
    return masks, _kth_values(kth_keys.to(device), scope), _pruned_max_values(pruned_keys, scope)


# ----------------------------------------------------------------------------- public API


def _check_tensors(tensors, names: list[str]) -> None:
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"tensors must be a non-empty list of tensors, got {type(tensors).__name__}")
    for t, name in zip(tensors, names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} must be a float32, float16, bfloat16 or float64 tensor, got {t.dtype}")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"tensors must all be on one device, got {sorted(map(str, devices))}")


def check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def fractions_per_tensor(value, count: int, name: str, items: str) -> list[float]:
    """`value` (one fraction for all, or a list with one per tensor) as `count` checked fractions;
    errors name the argument (`name`) and what the list should match (`items`, e.g. "tensors")."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries but there are {count} {items}")
        return [check_fraction(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return [check_fraction(value, name)] * count


def _check_bracket(bracket, tensors) -> None:
    if bracket is None:
        return
    if not isinstance(bracket, (list, tuple)) or len(bracket) != 2:
        raise TypeError("bracket must be a (lo, hi) pair of float tensors, one entry per tensor")
    for side, b in zip(("lo", "hi"), bracket):
        if not isinstance(b, torch.Tensor) or not b.is_floating_point():
            raise TypeError(f"bracket {side} must be a float tensor, got {type(b).__name__}")
        if b.numel() != len(tensors):
            raise ValueError(f"bracket {side} has {b.numel()} entries but there are {len(tensors)} tensors")
        if b.device != tensors[0].device:
            raise ValueError(f"bracket {side} is on {b.device} but the tensors are on {tensors[0].device}")


def topk_select(tensors, keep: list[int], *, scope: str = "layer", backend: str = "auto", names=None,
                bracket=None, hits: torch.Tensor | None = None, pruned_max: bool = False):
    """Select by kept counts: keep[i] per tensor (scope="layer") or [total] ("global").

    Returns (masks, kth values) and, with `pruned_max`, the largest pruned value per tensor too
    (float32, -inf where nothing is pruned; global: the largest over all tensors), which code that
    keeps a threshold (score > largest pruned) needs. bracket / hits: see `topk_masks`, `TopkTracker`."""
    names = names or [f"tensors[{i}]" for i in range(len(tensors))]
    _check_tensors(tensors, names)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    _check_bracket(bracket, tensors)
    which = resolve_backend(backend, tensors[0].device)
    select = topk_select_triton if which == "triton" else topk_select_torch
    return select(list(tensors), list(keep), scope, names, bracket, hits, pruned_max)


def topk_masks(
    tensors: list[torch.Tensor],
    sparsity: float | list[float],
    scope: str = "layer",
    backend: str = "auto",
    bracket: tuple[torch.Tensor, torch.Tensor] | None = None,
    pruned_max: bool = False,
    _hits: torch.Tensor | None = None,
):
    """Exact top-k bool masks for many tensors in one go, and the k-th (smallest kept) value of each.

    scope="layer": tensor i prunes num_pruned(numel_i, sparsity_i) elements (`sparsity` a float or a
    list with one per tensor). scope="global": one threshold over all tensors, pruning
    num_pruned(total, sparsity) elements in all (`sparsity` a float). Ties: lower flat index wins.
    kth values: float32 [len(tensors)], +inf where nothing is kept; with scope="global" every entry
    is the global k-th value. With the Triton backend the masks are views of one flat buffer.

    bracket: optional (lo, hi) float tensors with one entry per tensor, a guess of where each k-th
    value lies (e.g. around the previous step's). It only changes the speed: where the Triton
    kernels can prove the k-th value is inside and few elements are, they read each tensor twice
    instead of four or five times; otherwise they fall back. `TopkTracker` makes the guesses.

    pruned_max: also return the largest pruned value per tensor (-inf where nothing is pruned), for
    code that keeps a threshold `score > largest pruned`: (masks, kth, pruned_max).
    """
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"tensors must be a non-empty list of tensors, got {type(tensors).__name__}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    names = [f"tensors[{i}]" for i in range(len(tensors))]
    _check_tensors(tensors, names)
    numels = [t.numel() for t in tensors]
    if scope == "global":
        if isinstance(sparsity, (list, tuple)):
            raise ValueError("sparsity must be a single number with scope='global', got a list")
        total = sum(numels)
        keep = [total - num_pruned(total, check_fraction(sparsity, "sparsity"))]
    else:
        fractions = fractions_per_tensor(sparsity, len(tensors), "sparsity", "tensors")
        keep = [n - num_pruned(n, s) for n, s in zip(numels, fractions)]
    return topk_select(tensors, keep, scope=scope, backend=backend, names=names, bracket=bracket, hits=_hits,
                       pruned_max=pruned_max)


def topk_mask(scores: torch.Tensor, sparsity: float, *, backend: str = "auto") -> torch.Tensor:
    """Bool mask keeping the numel - round(sparsity * numel) largest scores (lower index wins ties)."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    n = scores.numel()
    keep = n - num_pruned(n, check_fraction(sparsity, "sparsity"))
    masks, _ = topk_select([scores], [keep], scope="layer", backend=backend, names=["scores"])
    return masks[0]



class TopkTracker:
    """Exact top-k masks for the same tensors step after step (mask training), cheaper when the k-th
    values move smoothly: each call guesses every k-th value by extending its last change (kth + change)
    and brackets the guess with a margin of `growth` times that change plus `relative_margin` times
    the value (see `topk_masks`' bracket). A wider bracket holds the k-th value more often but must
    not hold more than 1/16 of a tensor's elements (the candidate buffer), so the margin stays tight.

    Results are exactly those of `topk_masks`; only the speed depends on the guesses. No host
    synchronisation is added: the previous values stay on the device. `hit_rate()` (which does
    synchronise) reports how often the bracket held, for benchmarks and tuning.
    """

    def __init__(self, *, growth: float = 1.0, relative_margin: float = 1e-3):
        if not growth >= 0:
            raise ValueError(f"growth must be >= 0, got {growth!r}")
        if not relative_margin >= 0:
            raise ValueError(f"relative_margin must be >= 0, got {relative_margin!r}")
        self.growth, self.relative_margin = float(growth), float(relative_margin)
        self.reset()

    def reset(self) -> None:
        """Forget the previous k-th values (the next call runs without a bracket)."""
        self._signature = None
        self._kth = self._change = self._hits = None
        self.calls = self.bracketed_calls = 0

    def bracket(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (lo, hi) guess the next call will use, or None."""
        if self._kth is None:
            return None
        finite = torch.isfinite(self._kth)
        guess = torch.where(finite, self._kth + self._change, self._kth)
        margin = self.growth * self._change.abs() + self.relative_margin * self._kth.abs()
        margin = torch.where(finite, margin, torch.zeros_like(margin))
        return guess - margin, guess + margin

    def __call__(self, tensors, sparsity, scope: str = "layer", backend: str = "auto", pruned_max: bool = False):
        """topk_masks(tensors, sparsity, scope, backend, pruned_max=...) with this tracker's bracket."""
        signature = (scope, backend, tuple(t.numel() for t in tensors), tensors[0].device if tensors else None)
        if signature != self._signature:
            self.reset()
            self._signature = signature
            self._hits = torch.zeros(1 if scope == "global" else len(tensors), dtype=torch.int32,
                                     device=tensors[0].device)
        bracket = self.bracket()
        result = topk_masks(tensors, sparsity, scope=scope, backend=backend, bracket=bracket,
                            pruned_max=pruned_max, _hits=self._hits)
        kth = result[1]
        if self._kth is not None:
            both = torch.isfinite(kth) & torch.isfinite(self._kth)
            self._change = torch.where(both, kth - self._kth, torch.zeros_like(kth))
        else:
            self._change = torch.zeros_like(kth)
        self._kth = kth.clone()
        self.calls += 1
        self.bracketed_calls += bracket is not None
        return result

    def hit_rate(self) -> float:
        """Fraction of bracketed (segment, call) pairs whose bracket held (Triton backend; NaN if none).

        Segments with nothing to select (sparsity 0 or 1) count as misses."""
        if not self.bracketed_calls:
            return math.nan
        return float(self._hits.sum()) / (self.bracketed_calls * self._hits.numel())
