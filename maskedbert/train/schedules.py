"""Learning-rate schedules: linear warmup then linear decay to zero, or constant (with optional warmup).

Schedules are LambdaLR multipliers held in small picklable objects, so a scheduler's state_dict
round-trips through a checkpoint and resumes on the same step.
"""
from __future__ import annotations

import math

import torch

from maskedbert.choices import SCHEDULE_NAMES, WARMUP_ROUNDING_NAMES
from maskedbert.errors import UsageError

__all__ = ["SCHEDULES", "WARMUP_ROUNDINGS", "WarmupLinearDecay", "WarmupConstant", "resolve_warmup_steps",
           "build_schedule"]

# How warmup_ratio * total_steps becomes a whole number of steps. "floor" is the reference code's int()
# (uds-lsv/bert-stable-fine-tuning run_finetuning.py:161: 46 warmup steps of 468 on RTE, where "ceil" gives 47).
WARMUP_ROUNDINGS = dict(zip(WARMUP_ROUNDING_NAMES, (math.floor, math.ceil), strict=True))


class WarmupLinearDecay:
    """Multiplier rising 0 -> 1 over `warmup_steps`, then falling linearly to 0 at `total_steps`."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))


class WarmupConstant:
    """Multiplier rising 0 -> 1 over `warmup_steps`, then constant 1 (warmup_steps=0: plain constant)."""

    def __init__(self, warmup_steps: int, total_steps: int = 0):
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        return 1.0


SCHEDULES = dict(zip(SCHEDULE_NAMES, (WarmupLinearDecay, WarmupConstant), strict=True))


def resolve_warmup_steps(total_steps: int, warmup_steps: int | None = None, warmup_ratio: float | None = None,
                         warmup_rounding: str = "floor") -> int:
    """Warmup length in optimizer steps from an absolute count or a fraction of training.

    A fraction is rounded by `warmup_rounding`: "floor" (default, as the reference code) or "ceil".
    """
    if warmup_steps and warmup_ratio:
        raise ValueError("give warmup_steps or warmup_ratio, not both")
    if warmup_ratio is not None and not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio}")
    if warmup_steps is not None and warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_rounding not in WARMUP_ROUNDINGS:
        raise UsageError(f"warmup_rounding must be one of {sorted(WARMUP_ROUNDINGS)}, got {warmup_rounding!r}")
    if warmup_ratio:
        # no tidying of float error: "floor" is exactly the reference's int(), "ceil" maskedbert's former rule
        return int(WARMUP_ROUNDINGS[warmup_rounding](warmup_ratio * total_steps))
    return int(warmup_steps or 0)


def build_schedule(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    *,
    warmup_steps: int | None = None,
    warmup_ratio: float | None = None,
    warmup_rounding: str = "floor",
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR for schedule `name` ("linear" or "constant") over `total_steps` optimizer steps."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    warmup = resolve_warmup_steps(total_steps, warmup_steps, warmup_ratio, warmup_rounding)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[name](warmup, total_steps))
