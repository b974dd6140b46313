"""Stop a masked (unmerged) model's own `save_pretrained` from silently writing dense weights.

transformers' `model.save_pretrained(dir)` on a model with MaskedLinear layers writes the dense weights
plus the scores under names a plain model does not know; reloading it gives the *unpruned* model with
only an "unexpected keys" warning. `apply_masks_` therefore puts a guard in front of the model's
`save_pretrained` that raises a UsageError pointing at the two right ways:

    mb.save_pretrained(model, dir)                     # small mask adapter over the base checkpoint
    mb.merge_and_unload(model).save_pretrained(dir)    # plain transformers model with weights W*M

A call that passes its own `state_dict` goes through: the caller chose what to save. While
`suspended(model)` is active (maskedbert.integrations.MaskTrainingCallback holds it during
transformers.Trainer.train) every call goes through, so the Trainer's checkpoints hold weights, scores
and thresholds, which its resume reloads. `merge_and_unload` removes the guard. The guard is a small picklable object, so
`torch.save(model)` and `copy.deepcopy(model)` keep working.
"""
from __future__ import annotations

import contextlib
import inspect

from torch import nn

from maskedbert.errors import UsageError
from maskedbert.modules import MaskedLinear

_ATTR = "save_pretrained"


class UnmergedSaveGuard:
    """Callable that stands in for `model.save_pretrained` while the model has MaskedLinear layers."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.suspensions = 0  # > 0 while suspended(model) is active

    def __call__(self, *args, **kwargs):
        model = self.model
        original = type(model).save_pretrained
        if (not self.suspensions and _has_masked_layers(model)
                and _given_state_dict(original, model, args, kwargs) is None):
            raise UsageError(
                f"{type(model).__name__}.save_pretrained: the model has unmerged MaskedLinear layers, and "
                "transformers would save its dense weights (reloading them gives the unpruned model). Use "
                "mb.save_pretrained(model, dir) to save a mask adapter (masks + changed parameters), or "
                "mb.merge_and_unload(model).save_pretrained(dir) for a plain model with the pruned weights "
                "(inside transformers.Trainer, add maskedbert.integrations.MaskTrainingCallback: its "
                "checkpoints then keep the scores for resuming)"
            )
        return original(model, *args, **kwargs)


def install_save_guard(model: nn.Module) -> None:
    """Guard `model.save_pretrained` (only models that have one: Hugging Face PreTrainedModels)."""
    if callable(getattr(type(model), _ATTR, None)) and _ATTR not in model.__dict__:
        model.__dict__[_ATTR] = UnmergedSaveGuard(model)


@contextlib.contextmanager
def suspended(model: nn.Module):
    """Let `model.save_pretrained` save the unmerged state (weights + scores) inside this block."""
    guard = model.__dict__.get(_ATTR)
    if isinstance(guard, UnmergedSaveGuard):
        guard.suspensions += 1
    try:
        yield
    finally:
        if isinstance(guard, UnmergedSaveGuard):
            guard.suspensions -= 1


def remove_save_guard(model: nn.Module) -> None:
    if isinstance(model.__dict__.get(_ATTR), UnmergedSaveGuard):
        del model.__dict__[_ATTR]


def _has_masked_layers(model: nn.Module) -> bool:
    return any(isinstance(m, MaskedLinear) for m in model.modules())


def _given_state_dict(function, model, args, kwargs):
    try:
        bound = inspect.signature(function).bind(model, *args, **kwargs)
    except TypeError:  # a wrong call: let transformers report it
        return kwargs.get("state_dict")
    return bound.arguments.get("state_dict")
