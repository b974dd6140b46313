"""Debiasing losses for training with a known bias (Clark et al. 2019; Utama et al. 2020).

Every loss takes raw logits [B, C] and integer labels [B] and returns a scalar. Bias probabilities
p_b [B, C] come from a bias model (maskedbert.bias) and teacher probabilities p_t [B, C] from a
fine-tuned teacher; both are treated as constants (no gradient flows into them).

    cross_entropy              mean_i CE(z_i, y_i)
    product_of_experts         mean_i CE(log_softmax(z_i) + log p_b[i], y_i)
    reweight                   sum_i w_i CE_i / sum_i w_i,  w_i = 1 - p_b[i, y_i]
    confidence_regularization  mean_i -sum_c t_ic log_softmax(z_i)_c,  t_i ~ p_t[i] ** (1 - p_b[i, y_i])

Annealing (Utama et al. 2020, as the SRNet code uses it): the bias probabilities are flattened towards
uniform over training, p_b ** alpha renormalised, with alpha going linearly from 1 to a floor (0.8).

The registry (name, function, needs bias, needs teacher) is maskedbert.loss_registry, re-exported here.
`make_loss_fn(name, ...)` adapts a loss to the Trainer's `loss_fn(logits, batch)` hook; the batch
carries "labels" and, where the loss needs them, "bias_probs" / "teacher_probs" tensors that were
attached to the examples by id (maskedbert.bias.attach_probs), never by row order.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from maskedbert.loss_registry import LOSSES, LossEntry, canonical_loss_name, loss_entry, register_loss

__all__ = ["cross_entropy", "product_of_experts", "reweight", "confidence_regularization", "check_probs",
           "anneal_probs", "annealing_alpha", "LOSSES", "LossEntry", "register_loss", "canonical_loss_name",
           "get_loss", "NEEDS_BIAS", "NEEDS_TEACHER", "BatchLoss", "make_loss_fn"]

# floor for probabilities before taking logs: a bias model that puts exactly 0 on a class must not
# turn the PoE logits into -inf (and NaN gradients)
_PROB_FLOOR = 1e-12
# tolerance on "rows sum to one"; bias files are often stored in float32 with rounding
_SUM_TOL = 1e-3


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D tensor [batch, num_classes], got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be a 1-D tensor with one entry per row of logits "
                         f"({logits.shape[0]}), got {getattr(labels, 'shape', type(labels).__name__)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def check_probs(probs: torch.Tensor, logits: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a [B, C] probability tensor matching logits; returns it detached in logits' dtype."""
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"{name} must be a tensor [batch, num_classes], got {type(probs).__name__}")
    if probs.shape != logits.shape:
        raise ValueError(f"{name} must have the shape of logits {tuple(logits.shape)}, got {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {probs.dtype}")
    probs = probs.detach().to(device=logits.device, dtype=logits.dtype)
    if probs.numel():
        if not torch.isfinite(probs).all() or float(probs.min()) < 0:
            raise ValueError(f"{name} must hold finite, non-negative probabilities")
        row_sums = probs.sum(dim=1)
        worst = float((row_sums - 1).abs().max())
        if worst > _SUM_TOL:
            raise ValueError(f"{name} rows must sum to 1 (probabilities, not logits); worst row is off by {worst:.3g}")
    return probs


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(logits) against labels."""
    _check_logits_labels(logits, labels)
    return F.cross_entropy(logits, labels.long())


def product_of_experts(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor) -> torch.Tensor:
    """Product of experts: cross-entropy of log_softmax(logits) + log p_b (Clark et al. 2019)."""
    _check_logits_labels(logits, labels)
    bias_probs = check_probs(bias_probs, logits, "bias_probs")
    combined = F.log_softmax(logits, dim=1) + bias_probs.clamp_min(_PROB_FLOOR).log()
    return F.cross_entropy(combined, labels.long())


def reweight(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor) -> torch.Tensor:
    """Example reweighting: sum_i w_i CE_i / sum_i w_i with w_i = 1 - p_b[i, y_i]."""
    _check_logits_labels(logits, labels)
    bias_probs = check_probs(bias_probs, logits, "bias_probs")
    labels = labels.long()
    weights = 1.0 - bias_probs.gather(1, labels[:, None]).squeeze(1)
    per_example = F.cross_entropy(logits, labels, reduction="none")
    # a batch the bias model gets entirely right with certainty has all weights 0: the loss is 0 there
    return (weights * per_example).sum() / weights.sum().clamp_min(_PROB_FLOOR)


def confidence_regularization(
    logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor, teacher_probs: torch.Tensor
) -> torch.Tensor:
    """Confidence regularization (Utama et al. 2020): distil from the teacher scaled by the bias.

    Target t_i ~ p_t[i] ** (1 - p_b[i, y_i]) renormalised; loss = mean_i -sum_c t_ic log_softmax(z_i)_c.
    """
    _check_logits_labels(logits, labels)
    bias_probs = check_probs(bias_probs, logits, "bias_probs")
    teacher_probs = check_probs(teacher_probs, logits, "teacher_probs")
    exponent = 1.0 - bias_probs.gather(1, labels.long()[:, None])  # [B, 1]
    scaled = teacher_probs.clamp_min(_PROB_FLOOR) ** exponent
    target = scaled / scaled.sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


# ---- annealing ------------------------------------------------------------------------------------
def anneal_probs(probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """p ** alpha renormalised per row: alpha=1 keeps p, alpha -> 0 flattens it towards uniform."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    scaled = probs.clamp_min(_PROB_FLOOR) ** float(alpha)
    return scaled / scaled.sum(dim=1, keepdim=True)


def annealing_alpha(step: int, total_steps: int, floor: float = 0.8) -> float:
    """Linear from 1 at step 0 to `floor` at `total_steps` (held there after)."""
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor!r}")
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    progress = min(step, total_steps) / total_steps
    return 1.0 - (1.0 - floor) * progress


# ---- registry (maskedbert.loss_registry: one entry per loss) -----------------------------------------
def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function registered under `name` (or an alias)."""
    return loss_entry(name).resolve()


class _EntryFlag(Mapping):
    """{loss name: one flag of its registry entry}, read from the registry on every lookup (not a copy)."""

    def __init__(self, flag: str):
        self._flag = flag

    def __getitem__(self, name: str) -> bool:
        return getattr(LOSSES[name], self._flag)

    def __iter__(self) -> Iterator[str]:
        return iter(LOSSES)

    def __len__(self) -> int:
        return len(LOSSES)


NEEDS_BIAS: Mapping[str, bool] = _EntryFlag("needs_bias")
NEEDS_TEACHER: Mapping[str, bool] = _EntryFlag("needs_teacher")


class BatchLoss:
    """`loss_fn(logits, batch)` for the Trainer: reads labels / bias_probs / teacher_probs from the batch.

    With `anneal_floor` set, bias probabilities are annealed (p_b ** alpha, renormalised) with alpha
    going linearly from 1 to the floor over `total_steps` calls; `step` counts calls and can be set
    (e.g. when resuming).
    """

    def __init__(self, name: str, *, anneal_floor: float | None = None, total_steps: int | None = None):
        self.name = canonical_loss_name(name)
        self.entry = LOSSES[self.name]
        self.fn = self.entry.resolve()
        if anneal_floor is not None:
            if not self.entry.needs_bias:
                raise ValueError(f"anneal_floor only applies to losses that use bias probabilities, not {self.name!r}")
            if total_steps is None:
                raise ValueError("total_steps is required when anneal_floor is set")
            annealing_alpha(0, total_steps, anneal_floor)  # validates both
        self.anneal_floor = anneal_floor
        self.total_steps = total_steps
        self.step = 0

    @property
    def needs_bias(self) -> bool:
        return self.entry.needs_bias

    @property
    def needs_teacher(self) -> bool:
        return self.entry.needs_teacher

    def current_alpha(self) -> float:
        if self.anneal_floor is None:
            return 1.0
        return annealing_alpha(self.step, self.total_steps, self.anneal_floor)

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        labels = _batch_field(batch, "labels", self.name)
        args = [logits, labels]
        if self.needs_bias:
            bias_probs = check_probs(_batch_field(batch, "bias_probs", self.name), logits, "bias_probs")
            if self.anneal_floor is not None:
                bias_probs = anneal_probs(bias_probs, self.current_alpha())
            args.append(bias_probs)
        if self.needs_teacher:
            args.append(_batch_field(batch, "teacher_probs", self.name))
        if logits.requires_grad:  # only training steps advance the annealing
            self.step += 1
        return self.fn(*args)

    def __repr__(self) -> str:
        anneal = ("" if self.anneal_floor is None
                  else f", anneal_floor={self.anneal_floor}, total_steps={self.total_steps}")
        return f"BatchLoss({self.name!r}{anneal})"


def _batch_field(batch: Mapping[str, torch.Tensor], key: str, loss_name: str) -> torch.Tensor:
    if key not in batch:
        raise ValueError(f"loss {loss_name!r} needs batch[{key!r}]; the batch has {sorted(batch)} "
                         f"(attach probabilities to the examples by id with maskedbert.bias.attach_probs)")
    return batch[key]


def make_loss_fn(name: str, *, anneal_floor: float | None = None, total_steps: int | None = None) -> BatchLoss:
    """A Trainer `loss_fn(logits, batch)` for the named loss (optionally with bias annealing)."""
    return BatchLoss(name, anneal_floor=anneal_floor, total_steps=total_steps)
