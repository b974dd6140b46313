"""A masked (unmerged) model's own `save_pretrained` writes its mask adapter, never silent dense weights.

transformers' `model.save_pretrained(dir)` on a model with MaskedLinear layers would write the dense
weights plus the scores under names a plain model does not know; reloading that gives the *unpruned*
model with only an "unexpected keys" warning. `apply_masks_` therefore puts a stand-in in front of the
model's `save_pretrained` that writes the mask adapter instead (maskedbert.adapters.save_pretrained:
mask_config.json, bit-packed masks, changed parameters, README.md model card). That is what
`transformers.Trainer.save_model()` and `trainer.push_to_hub()` call, so they produce an adapter that
`mb.from_pretrained(dir)` reloads. `model.push_to_hub(repo_id)` uploads the same adapter
(transformers' own would replace the adapter's model card with a generic one). For a
plain model with the pruned weights, merge first: `mb.merge_and_unload(model).save_pretrained(dir)`.

While `suspended(model)` is active (maskedbert.integrations' callbacks hold it during
transformers.Trainer.train) a call writes the full transformers state as well (weights, scores and
thresholds), which the Trainer's resume reloads, and the adapter beside it. A call that passes its
own `state_dict` goes straight to transformers: the caller chose what to save. `merge_and_unload`
removes the stand-in. It is a small picklable object, so `torch.save(model)` and
`copy.deepcopy(model)` keep working.
"""
from __future__ import annotations

import contextlib
import inspect
import tempfile
import warnings

from torch import nn

from maskedbert.adapters import BaseReference, save_pretrained
from maskedbert.errors import UsageError
from maskedbert.modules import MaskedLinear

_ATTR = "save_pretrained"
_PUSH_ATTR = "push_to_hub"


class MaskAdapterSavePretrained:
    """Callable that stands in for `model.save_pretrained` while the model has MaskedLinear layers."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.suspensions = 0  # > 0 while suspended(model) is active
        self.warned = False  # a checkpoint without an adapter is reported once
        self.base_reference = None  # maskedbert.adapters.BaseReference, kept while suspended (one base load per run)

    def __call__(self, save_directory, *args, **kwargs):
        model = self.model
        original = type(model).save_pretrained
        chosen_state = _given_state_dict(original, model, save_directory, args, kwargs)
        if not _has_masked_layers(model) or chosen_state is not None:
            return original(model, save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return None
        if not self.suspensions:
            try:
                save_pretrained(model, save_directory)
            except UsageError as err:
                raise UsageError(f"{type(model).__name__}.save_pretrained writes a mask adapter here: {err}. (Inside "
                                 "transformers.Trainer, maskedbert.integrations.MaskTrainingCallback or "
                                 "MaskCheckpointCallback make checkpoints hold the full state as well, for "
                                 "resuming; for a plain model with the pruned weights use "
                                 "mb.merge_and_unload(model).save_pretrained(dir))") from None
            return None
        original(model, save_directory, *args, **kwargs)  # full state: the Trainer resumes from it
        try:
            if self.base_reference is None or not self.base_reference.covers(model):
                self.base_reference = BaseReference.resolve(model)
            save_pretrained(model, save_directory, base_reference=self.base_reference)
        except UsageError as err:  # e.g. no recorded base checkpoint: the full state still resumes
            if not self.warned:
                warnings.warn(f"checkpoints hold the full model state but no mask adapter: {err}", stacklevel=2)
                self.warned = True
        return None


class MaskAdapterPushToHub:
    """Stands in for `model.push_to_hub`: uploads the mask adapter (mb.save_pretrained(push_to_hub=True))."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                 token: str | None = None, **ignored):
        if not _has_masked_layers(self.model):
            return type(self.model).push_to_hub(self.model, repo_id, commit_message=commit_message, private=private,
                                                token=token, **ignored)
        with tempfile.TemporaryDirectory() as folder:
            return save_pretrained(self.model, folder, push_to_hub=True, repo_id=repo_id, private=private, token=token,
                                   commit_message=commit_message or "Upload maskedbert mask adapter")


def install_save_guard(model: nn.Module) -> None:
    """Route `model.save_pretrained` and `model.push_to_hub` to the mask adapter (only models that have
    them: PreTrainedModels)."""
    if callable(getattr(type(model), _ATTR, None)) and _ATTR not in model.__dict__:
        model.__dict__[_ATTR] = MaskAdapterSavePretrained(model)
    if callable(getattr(type(model), _PUSH_ATTR, None)) and _PUSH_ATTR not in model.__dict__:
        model.__dict__[_PUSH_ATTR] = MaskAdapterPushToHub(model)


@contextlib.contextmanager
def suspended(model: nn.Module):
    """Inside this block `model.save_pretrained` also writes the full state (weights + scores)."""
    guard = model.__dict__.get(_ATTR)
    if isinstance(guard, MaskAdapterSavePretrained):
        guard.suspensions += 1
    try:
        yield
    finally:
        if isinstance(guard, MaskAdapterSavePretrained):
            guard.suspensions -= 1
            if not guard.suspensions:
                guard.base_reference = None  # the next run may start from changed weights


def remove_save_guard(model: nn.Module) -> None:
    if isinstance(model.__dict__.get(_ATTR), MaskAdapterSavePretrained):
        del model.__dict__[_ATTR]
    if isinstance(model.__dict__.get(_PUSH_ATTR), MaskAdapterPushToHub):
        del model.__dict__[_PUSH_ATTR]


def _has_masked_layers(model: nn.Module) -> bool:
    return any(isinstance(m, MaskedLinear) for m in model.modules())


def _given_state_dict(function, model, save_directory, args, kwargs):
    try:
        bound = inspect.signature(function).bind(model, save_directory, *args, **kwargs)
    except TypeError:  # a wrong call: let transformers report it
        return kwargs.get("state_dict")
    return bound.arguments.get("state_dict")
