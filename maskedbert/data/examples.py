"""The example record every task loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Example", "UNLABELED"]

UNLABELED = -1  # label of test examples whose gold label is hidden


@dataclass(frozen=True)
class Example:
    """One example: a stable `id` (unique within its split), one or two texts, an integer class index
    (float score for regression, UNLABELED when hidden) and task-specific fields in `meta`
    (HANS: heuristic, subcase, template)."""

    id: str
    text_a: str
    text_b: str | None
    label: int | float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
