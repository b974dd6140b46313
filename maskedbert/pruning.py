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

import contextlib
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from maskedbert.kernels.topk import TopkTracker, num_pruned, topk_masks
from maskedbert.modules import MaskedLinear
from maskedbert.patching import magnitude_prune_, masked_modules

SPARSITY_METHODS = ("threshold_reset", "exact_topk")
AMOUNT_OF = ("original", "remaining")


def _check_fraction(name: str, value, *, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 or (
            upper_open and value >= 1.0):
        raise ValueError(f"{name} must be a number in [0, {'1)' if upper_open else '1]'}, got {value!r}")
    return float(value)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


# ---- schedules --------------------------------------------------------------------------------------
def cubic_sparsity(step: int, total_steps: int, initial: float = 0.7, final: float = 0.9) -> float:
    """s(t) = s_f + (s_i - s_f) * (1 - t/T)^3, with t clamped to [0, T]."""
    _check_int("total_steps", total_steps, 1)
    _check_int("step", step, 0)
    initial, final = _check_fraction("initial", initial), _check_fraction("final", final)
    progress = min(step, total_steps) / total_steps
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass
class CubicSparsitySchedule:
    """Cubic sparsity from `initial` at `begin_step` to `final` at `end_step` (held before and after).

    The reference code ramps between 10% and 80% of training; `for_training` uses 0% and 80% so
    the last fifth of training runs (and selects its best mask) at the final sparsity.
    """

    initial: float = 0.7
    final: float = 0.9
    begin_step: int = 0
    end_step: int = 1

    def __post_init__(self):
        _check_fraction("initial", self.initial, upper_open=True)
        _check_fraction("final", self.final, upper_open=True)
        _check_int("begin_step", self.begin_step, 0)
        _check_int("end_step", self.end_step, self.begin_step + 1)

    @classmethod
    def for_training(cls, total_steps: int, initial: float = 0.7, final: float = 0.9,
                     ramp_end_fraction: float = 0.8) -> "CubicSparsitySchedule":
        _check_int("total_steps", total_steps, 1)
        _check_fraction("ramp_end_fraction", ramp_end_fraction)
        return cls(initial, final, 0, max(1, round(ramp_end_fraction * total_steps)))

    def __call__(self, step: int) -> float:
        _check_int("step", step, 0)
        if step <= self.begin_step:
            return self.initial
        return cubic_sparsity(step - self.begin_step, self.end_step - self.begin_step, self.initial, self.final)

    def reached_final(self, step: int) -> bool:
        return step >= self.end_step


def imp_sparsity_levels(final: float = 0.9, per_round: float = 0.1, amount_of: str = "original") -> list[float]:
    """Target sparsity after each IMP round.

    "original": each round prunes `per_round` of the original weights (0.1, 0.2, ..., 0.9 by default,
    the reference code's rule); "remaining": each prunes `per_round` of what is left
    (1 - (1 - per_round)^r). The last level is `final` exactly.
    """
    final = _check_fraction("final", final, upper_open=True)
    per_round = _check_fraction("per_round", per_round)
    if per_round == 0.0:
        raise ValueError("per_round must be > 0")
    if amount_of not in AMOUNT_OF:
        raise ValueError(f"amount_of must be one of {AMOUNT_OF}, got {amount_of!r}")
    levels: list[float] = []
    r = 1
    while not levels or levels[-1] < final:
        level = r * per_round if amount_of == "original" else 1.0 - (1.0 - per_round) ** r
        level = round(level, 10)  # 0.30000000000000004 -> 0.3
        levels.append(min(level, final) if level > final - 1e-9 else level)
        r += 1
    return levels


# ---- weights: snapshots and rewinding ---------------------------------------------------------------
def _score_ids(model: nn.Module) -> set[int]:
    return {id(m.scores) for m in masked_modules(model).values() if m.scores is not None}


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the task-head parameters (outside the base model, e.g. classifier.*)."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        return set()
    return {name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")}


def snapshot_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter except mask scores: the state IMP rewinds to."""
    scores = _score_ids(model)
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if id(p) not in scores}


@torch.no_grad()
def rewind_weights_(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                    rewind_classifier: bool = False) -> list[str]:
    """Copy `state` into the model's parameters (not scores or masks); returns the names restored.

    With rewind_classifier=False the task head keeps its current (trained) weights.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping name -> tensor, got {type(state).__name__}")
    scores = _score_ids(model)
    head = set() if rewind_classifier else head_parameter_names(model)
    params = {name: p for name, p in model.named_parameters() if id(p) not in scores and name not in head}
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"rewind state lacks parameter(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, param in params.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ValueError(f"rewind state {name!r} has shape {tuple(state[name].shape)}, "
                             f"the model's has {tuple(param.shape)}")
        param.copy_(state[name].to(param.device, param.dtype))
    return sorted(params)


def load_rewind_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights to rewind to from a model directory (model.safetensors / pytorch_model.bin) or a file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise ValueError(f"{path}: no model.safetensors or pytorch_model.bin to rewind to")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return dict(state)


# ---- exact and threshold-reset sparsity for score masks -------------------------------------------
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


# ---- IMP --------------------------------------------------------------------------------------------
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
) -> list[dict]:
    """Run IMP rounds on a model whose layers are MaskedLinear in mode "fixed".

    Round r: `train_round(model, r)` trains the kept weights (build the optimizer and schedule
    inside it: they are rebuilt every round), then magnitude pruning to levels[r] (exact), then the
    weights are rewound to `rewind_state` (default: a snapshot taken before round 0), and
    `on_level(model, level, r)` sees the new mask on rewound weights (save the mask there).
    `start_round` resumes an interrupted run: the model must hold the state `on_level` saw after
    round start_round - 1 (and `rewind_state` the original snapshot); earlier rounds are skipped.
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
    if start_round and rewind_state is None:
        raise ValueError("start_round > 0 needs the original rewind_state (the model now holds pruned weights)")
    state = snapshot_weights(model) if rewind_state is None else dict(rewind_state)
    records = []
    for r, level in enumerate(levels):
        if r < start_round:
            continue
        train_round(model, r)
        magnitude_prune_(model, level, scope)
        measured = _check_exact(model, level, scope)
        rewind_weights_(model, state, rewind_classifier=rewind_classifier)
        records.append({"round": r, "level": level, "sparsity": measured})
        if on_level is not None:
            on_level(model, level, r)
    return records


# ---- a small training loop (fine-tuning, IMP rounds, mask training) -------------------------------
@dataclass
class TrainSettings:
    """Optimizer and loop settings; the optimizer and schedule are built anew on every call."""

    steps: int
    batch_size: int = 32
    lr: float = 2e-5  # weights and head (BERT fine-tuning)
    lr_scores: float = 1e-4  # mask scores; they live on the scale of the threshold (1e-2)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        for name in ("lr", "lr_scores", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        _check_fraction("warmup_ratio", self.warmup_ratio)


def train_steps(model: nn.Module, dataset, collate_fn, loss_fn: Callable, settings: TrainSettings, *,
                step_callback: Callable[[int], object] | None = None, desc: str = "train",
                output_dir: str | None = None) -> list[float]:
    """Train for settings.steps optimizer steps with maskedbert's Trainer; returns each step's loss.

    `loss_fn(logits, batch)` computes the loss (maskedbert.losses.make_loss_fn); parameters train
    as their requires_grad says (mask scores, weights and head by the MaskConfig), in the groups of
    patching.mask_param_groups (scores at lr_scores without decay); the optimizer and schedule are
    new on every call (IMP rebuilds them each round). `step_callback(step)` runs after every
    optimizer step (step counts from 1), e.g. a MaskSparsityController. The Trainer's log
    (log.jsonl) and final checkpoint go to `output_dir`; without one, to a temporary folder that is
    removed afterwards.
    """
    import shutil
    import tempfile

    from maskedbert.patching import mask_param_groups
    from maskedbert.train.runlog import read_jsonl
    from maskedbert.train.trainer import TrainConfig, Trainer

    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset must not be empty")
    groups = mask_param_groups(model, lr_scores=settings.lr_scores, lr_weights=settings.lr,
                               weight_decay=settings.weight_decay)
    if not groups:
        raise ValueError("model has no trainable parameters")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", desc).strip("-") or "train"
    run_dir = output_dir or tempfile.mkdtemp(prefix=f"{slug}-")  # the progress bar shows the folder name
    try:
        config = TrainConfig(
            output_dir=run_dir, max_steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
            weight_decay=settings.weight_decay, schedule=settings.schedule, warmup_ratio=settings.warmup_ratio,
            max_grad_norm=settings.max_grad_norm or None, seed=settings.seed, log_every=1, log_grad_norms=False,
            device=str(next(model.parameters()).device), progress=True)
        callback = None if step_callback is None else (lambda trainer, step: step_callback(step))
        trainer = Trainer(model, config, dataset, collate_fn, loss_fn=loss_fn, param_groups=groups,
                          step_callback=callback)
        trainer.train(resume=False)
        records = read_jsonl(os.path.join(run_dir, "log.jsonl"))
        losses = [float(r["loss"]) for r in records if r.get("type") == "train"]
    finally:
        if output_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:  # the log stays; the end-of-run checkpoint (model + optimizer) is large and not reused
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run_dir, "checkpoint.pt"))
    model.eval()
    return losses
