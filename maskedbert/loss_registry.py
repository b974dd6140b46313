"""The registry of training losses: one entry per loss says its name, its function and what it reads.

    register_loss(LossEntry("focal", my_focal_loss, needs_bias=False))   # one entry adds a loss

Everything that depends on which losses exist derives from `LOSSES`: the `--losses` help and its
check (maskedbert.experiments.srnet), the batch fields a loss reads (maskedbert.losses.BatchLoss), the
probabilities a run attaches to its examples and the cells a study needs first (a teacher loss needs
the CE fine-tuned model). An entry's function is a callable or "module:attribute", imported when the
loss is first used: the built-in losses are named that way so that this module, and every `--help`
built from it, imports no torch.

A loss function takes (logits [B, C], labels [B]), then bias_probs [B, C] when `needs_bias`, then
teacher_probs [B, C] when `needs_teacher`, and returns a scalar tensor.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

__all__ = ["LossEntry", "LOSSES", "register_loss", "canonical_loss_name", "loss_entry", "loss_names"]


@dataclasses.dataclass(frozen=True)
class LossEntry:
    name: str
    function: Callable[..., Any] | str  # a callable, or "module:attribute" imported on first use
    needs_bias: bool = False
    needs_teacher: bool = False
    aliases: tuple[str, ...] = ()

    def resolve(self) -> Callable[..., Any]:
        """The loss function itself (importing its module when the entry names it)."""
        if callable(self.function):
            return self.function
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)


LOSSES: dict[str, LossEntry] = {}
_ALIASES: dict[str, str] = {}


def register_loss(entry: LossEntry, *, overwrite: bool = False) -> LossEntry:
    """Add a loss (name and aliases are matched case-insensitively)."""
    if not isinstance(entry, LossEntry):
        raise TypeError(f"entry must be a LossEntry, got {type(entry).__name__}")
    if not isinstance(entry.function, str) and not callable(entry.function):
        raise TypeError(f"loss {entry.name!r}: function must be callable or 'module:attribute', "
                        f"got {type(entry.function).__name__}")
    if isinstance(entry.function, str) and ":" not in entry.function:
        raise ValueError(f"loss {entry.name!r}: function must be 'module:attribute', got {entry.function!r}")
    if entry.needs_teacher and not entry.needs_bias:
        # BatchLoss passes (logits, labels, bias_probs, teacher_probs): a teacher comes after a bias
        raise ValueError(f"loss {entry.name!r}: needs_teacher=True needs needs_bias=True (the argument order)")
    name = entry.name.lower()
    if name != entry.name:
        raise ValueError(f"loss name must be lower case, got {entry.name!r}")
    taken = [n for n in (name, *(a.lower() for a in entry.aliases)) if n in LOSSES or n in _ALIASES]
    if taken and not overwrite:
        raise ValueError(f"loss name {taken[0]!r} is already registered (pass overwrite=True to replace it)")
    LOSSES[name] = entry
    _ALIASES.update({a.lower(): name for a in entry.aliases})
    return entry


def canonical_loss_name(name: str) -> str:
    """The registry key for a loss name or alias ("Reweighting" -> "reweight")."""
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)} (aliases: {sorted(_ALIASES)})")
    return key


def loss_entry(name: str) -> LossEntry:
    return LOSSES[canonical_loss_name(name)]


def loss_names() -> tuple[str, ...]:
    """The registered losses, in registration order."""
    return tuple(LOSSES)


# Clark et al. (2019) product of experts and example reweighting; Utama et al. (2020) confidence
# regularization (the teacher is a fine-tuned model, the bias model scales its confidence).
register_loss(LossEntry("ce", "maskedbert.losses:cross_entropy", aliases=("cross_entropy",)))
register_loss(LossEntry("poe", "maskedbert.losses:product_of_experts", needs_bias=True,
                        aliases=("product_of_experts",)))
register_loss(LossEntry("reweight", "maskedbert.losses:reweight", needs_bias=True, aliases=("reweighting",)))
register_loss(LossEntry("conf_reg", "maskedbert.losses:confidence_regularization", needs_bias=True,
                        needs_teacher=True, aliases=("confidence_regularization", "regularization")))
