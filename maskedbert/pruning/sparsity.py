"""Sparsity control of score masks: the reference code's threshold reset, exact top-k sparsity, and the
step callback that keeps a mask-training run on its schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

from maskedbert.choices import SPARSITY_METHODS
from maskedbert.kernels.topk import TopkTracker, num_pruned, topk_masks
from maskedbert.modules import MaskedLinear
from maskedbert.patching import masked_modules
from maskedbert.pruning._checks import _check_fraction, _check_int
from maskedbert.pruning.schedules import CubicSparsitySchedule


def _score_layers(model: nn.Module) -> dict[str, MaskedLinear]:
    layers = {n: m for n, m in masked_modules(model).items() if m.mode == "scores"}
    if not layers:
        raise ValueError("model has no MaskedLinear layers in mode 'scores' (apply_masks_ with mode='scores')")
    return layers


def _mean_threshold(layers: list[MaskedLinear]) -> torch.Tensor:
    """Mean of the layers' thresholds as a 0-d float32 tensor on the first layer's device (no host sync)."""
    device = layers[0].threshold_tensor.device
    return torch.stack([layer.threshold_tensor.to(device) for layer in layers]).mean()


@torch.no_grad()
def reset_thresholds_(model: nn.Module, sparsity: float, scope: str = "layer") -> torch.Tensor:
    """The reference code's reset: threshold := k-th smallest score, k = int(numel * sparsity).

    Kept where score > threshold, so ties at the k-th value are all pruned and the sparsity can come
    out above the target; a layer whose k-th value equals its largest score keeps its old threshold
    (the reference's guard against pruning everything). Returns the mean threshold as a 0-d tensor
    (float() it to log it; that waits for the device). The thresholds stay on the device: no host
    synchronisation per layer.
    """
    sparsity = _check_fraction("sparsity", sparsity)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    layers = list(_score_layers(model).values())
    if scope == "global":
        groups = [(layers, torch.cat([layer.scores.detach().reshape(-1).float() for layer in layers]))]
    else:
        groups = [([layer], layer.scores.detach().reshape(-1).float()) for layer in layers]
    for members, flat in groups:
        k = int(flat.numel() * sparsity)  # shapes only: deciding here does not wait for the device
        if k == 0:
            continue
        kth = flat.kthvalue(k).values
        usable = kth < flat.amax()  # the guard, decided on the device
        for layer in members:
            layer.threshold_tensor.copy_(torch.where(usable, kth, layer.threshold_tensor))
    return _mean_threshold(layers)


@torch.no_grad()
def exact_sparsity_(model: nn.Module, sparsity: float, scope: str = "layer",
                    tracker: TopkTracker | None = None) -> torch.Tensor:
    """Make every score mask prune exactly round(sparsity * numel) (per layer or over all layers).

    Exact top-k picks the kept set (ties: lower index kept); each layer's threshold becomes the
    largest pruned score (with scope "global" the largest over all layers), and kept scores tied with
    it move up by one ulp so that `score > threshold` reproduces the top-k set exactly. Where nothing
    is pruned the threshold goes below every score (min - 1). Returns the mean threshold as a 0-d
    tensor (float() it to log it; that waits for the device).

    Nothing here waits for the device except top-k's NaN check (one per call): thresholds are
    computed into the layers' buffers and ties are fixed by unconditional on-device writes; the
    Python branches depend only on shapes and `sparsity`. See `_exact_thresholds_` for the cost.

    tracker: a `TopkTracker` kept across steps (MaskSparsityController keeps one) lets the Triton
    top-k bracket each k-th value around the previous step's and read the scores fewer times.
    """
    sparsity = _check_fraction("sparsity", sparsity)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    layers = list(_score_layers(model).values())
    nonempty = [layer for layer in layers if layer.scores.numel()]  # an empty matrix has nothing to prune
    if nonempty:
        _exact_thresholds_(nonempty, sparsity, scope, tracker)
    return _mean_threshold(layers)


def _exact_thresholds_(layers: list[MaskedLinear], sparsity: float, scope: str,
                       tracker: TopkTracker | None = None) -> None:
    """exact_sparsity_'s work. Besides the top-k (which also returns the largest pruned score), one
    pass over the scores per layer with something pruned and kept: the tie fix
    s = max(s, where(mask, nextafter(threshold), -inf)), which reads the mask and s and writes s
    (with a temporary: about 17 bytes per score). Kept scores are >= every pruned score, so the max
    changes exactly the kept scores equal to the threshold. Layers with nothing pruned take one
    min-reduction (4 bytes per score) instead.
    """
    scores = [layer.scores.detach() for layer in layers]  # share storage: the tie fix writes through
    select = tracker if tracker is not None else topk_masks
    masks, _, pruned_max = select(scores, sparsity, scope=scope, pruned_max=True)
    numels = [s.numel() for s in scores]
    if scope == "global":
        total = sum(numels)
        pruned = [num_pruned(total, sparsity)] * len(layers)
        numels = [total] * len(layers)
    else:
        pruned = [num_pruned(n, sparsity) for n in numels]
    candidates = []
    for i, (s, n_pruned) in enumerate(zip(scores, pruned)):
        if n_pruned:
            candidates.append(pruned_max[i])
        else:  # below every score; nextafter where |min| is too large for min - 1 to differ from min
            low = s.amin().float()
            # full_like, not new_tensor: a host-to-device copy of a Python number would synchronise
            candidates.append(torch.minimum(low - 1.0, torch.nextafter(low, torch.full_like(low, -math.inf))))
    thresholds = torch.stack(candidates)
    if scope == "global" and pruned[0]:
        thresholds = thresholds.amax().expand(len(layers))  # one threshold over every layer
    for layer, threshold in zip(layers, thresholds):
        layer.threshold_tensor.copy_(threshold)
    # one ulp up in the dtype the forward compares in: fp16/bf16 scores need their own ulp; fp32 (and
    # fp64, which the forward rounds to fp32) need an fp32 one
    bumps = {}
    for i, (s, mask) in enumerate(zip(scores, masks)):
        if pruned[i] == 0 or pruned[i] == numels[i]:  # nothing pruned or nothing kept: no ties to fix
            continue
        ulp_dtype = s.dtype if s.element_size() < 4 else torch.float32
        if ulp_dtype not in bumps:
            as_dtype = thresholds.to(ulp_dtype)
            bumps[ulp_dtype] = torch.nextafter(as_dtype, torch.full_like(as_dtype, math.inf))
        torch.maximum(s, torch.where(mask, bumps[ulp_dtype][i], -math.inf), out=s)


def score_mask_sparsity(model: nn.Module) -> float:
    """Fraction of all masked weights pruned (MaskedLinear layers of either mode)."""
    return float(_pruned_fraction(model))  # the one host synchronisation


def _pruned_fraction(model: nn.Module) -> torch.Tensor:
    """score_mask_sparsity as a 0-d float64 tensor on the device, without waiting for it."""
    layers = list(masked_modules(model).values())
    if not layers:
        raise ValueError("model has no MaskedLinear layers")
    total = sum(layer.weight.numel() for layer in layers)
    device = layers[0].weight.device
    kept = torch.stack([layer.mask().sum().to(device) for layer in layers]).sum()
    return (total - kept.double()) / total


class MaskSparsityController:
    """Step callback for mask training: keeps the score masks on the cubic sparsity schedule.

    method "threshold_reset": every `reset_every` steps (and at step 0) reset thresholds to the k-th
    score at s(t), as the reference code does; "exact_topk": exact top-k at s(t) every step.
    `finalize()` enforces the final sparsity exactly, so the mask that is saved is the one asked for.
    """

    def __init__(self, model: nn.Module, schedule: CubicSparsitySchedule, *, method: str = "threshold_reset",
                 reset_every: int = 50, scope: str = "layer"):
        if method not in SPARSITY_METHODS:
            raise ValueError(f"method must be one of {SPARSITY_METHODS}, got {method!r}")
        if not isinstance(schedule, CubicSparsitySchedule):
            raise TypeError(f"schedule must be a CubicSparsitySchedule, got {type(schedule).__name__}")
        _check_int("reset_every", reset_every, 1)
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        _score_layers(model)
        self.model, self.schedule, self.method = model, schedule, method
        self.reset_every, self.scope = reset_every, scope
        self.tracker = TopkTracker()  # brackets each step's k-th values around the previous step's
        self._history: list[tuple[int, float, torch.Tensor]] = []  # measured sparsity kept on the device

    @property
    def history(self) -> list[tuple[int, float, float]]:
        """(step, target, measured sparsity) per applied step (reading it waits for the device)."""
        return [(step, target, float(measured)) for step, target, measured in self._history]

    def apply(self, step: int) -> float:
        target = self.schedule(step)
        if self.method == "exact_topk":
            exact_sparsity_(self.model, target, self.scope, tracker=self.tracker)
        else:
            reset_thresholds_(self.model, target, self.scope)
        self._history.append((step, target, _pruned_fraction(self.model)))
        return target

    def __call__(self, step: int, *_args) -> None:
        if self.method == "exact_topk" or step % self.reset_every == 0:
            self.apply(step)

    def finalize(self) -> float:
        """Exact final sparsity; returns the measured sparsity (== the final target up to rounding)."""
        exact_sparsity_(self.model, self.schedule.final, self.scope)
        return score_mask_sparsity(self.model)
