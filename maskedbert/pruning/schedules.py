"""Sparsity schedules: the cubic ramp of mask training and IMP's per-round levels.

Cubic (Zhu & Gupta 2017): s(t) = s_f + (s_i - s_f) (1 - t/T)^3; Liu et al. (2022) use it for gradual
sparsity increase (GSI, 70% -> 90%). IMP levels: 10% of the original weights per round by default,
as the reference code.
"""
from __future__ import annotations

from dataclasses import dataclass

from maskedbert.choices import AMOUNT_OF
from maskedbert.pruning._checks import _check_fraction, _check_int


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
