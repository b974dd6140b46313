"""Argument checks shared by the pruning modules (errors name the argument and the value)."""
from __future__ import annotations


def _check_fraction(name: str, value, *, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 or (
            upper_open and value >= 1.0):
        raise ValueError(f"{name} must be a number in [0, {'1)' if upper_open else '1]'}, got {value!r}")
    return float(value)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
