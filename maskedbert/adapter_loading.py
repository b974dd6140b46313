"""Loading a mask adapter (written by maskedbert.adapters.save_pretrained) onto its base model.

    model = mb.from_pretrained("adapter/")                     # loads the recorded base, applies the masks
    model = mb.from_pretrained("adapter/", base_model=model0)  # or a base you already hold (name, path, module)
    model = mb.from_pretrained(model0, "adapter/")             # PEFT's argument order
"""
from __future__ import annotations

import os
import warnings

import huggingface_hub
import torch
import transformers
from torch import nn

from maskedbert.adapters import CHANGED_NAME, CONFIG_NAME, MASKS_NAME, read_adapter_config
from maskedbert.checksums import load_verified
from maskedbert.config import CONFIG_ATTR, MaskConfig
from maskedbert.errors import UsageError
from maskedbert.masks import load_masks, masked_modules
from maskedbert.patching import MaskSparsityWarning, apply_masks_

__all__ = ["from_pretrained"]


def from_pretrained(
    adapter: str | os.PathLike | nn.Module,
    base_model: str | os.PathLike | nn.Module | None = None,
    *,
    revision: str | None = None,
    adapter_revision: str | None = None,
    token: str | None = None,
    **from_pretrained_kwargs,
) -> nn.Module:
    """The masked model saved in `adapter` (a folder, or a hub repo id when no such folder exists).

    base_model: None loads the recorded base (name or path, at the recorded revision unless
    `revision` is given) as the recorded task class with the recorded config; a name or path loads
    that instead; an nn.Module (unmasked, same architecture) is used as is and changed in place.
    Extra keyword arguments go to transformers' from_pretrained. Returns the model with the masks
    applied and the changed parameters loaded; its logits equal the saved model's.

    PEFT's order works too: from_pretrained(base_module, "adapter/") is from_pretrained("adapter/", base_module).
    """
    if isinstance(adapter, nn.Module):
        if not isinstance(base_model, (str, os.PathLike)):
            raise UsageError(f"from_pretrained: got a model first ({type(adapter).__name__}), so the second argument "
                             "must be the adapter folder or hub repo id, got "
                             f"{type(base_model).__name__}: call from_pretrained(model, 'adapter/') or "
                             "from_pretrained('adapter/', base_model=model)")
        adapter, base_model = base_model, adapter
    if not isinstance(adapter, (str, os.PathLike)):
        raise UsageError(f"from_pretrained: adapter must be an adapter folder or hub repo id, got "
                         f"{type(adapter).__name__}")
    folder = _adapter_folder(adapter, adapter_revision, token)
    payload = read_adapter_config(folder)
    mask_config = MaskConfig.from_dict(payload["mask_config"])
    if isinstance(base_model, nn.Module):
        if masked_modules(base_model):
            raise UsageError("from_pretrained: base_model already has masks; pass the unmasked base model")
        if from_pretrained_kwargs or revision is not None:
            raise UsageError("from_pretrained: revision and loading options apply only when base_model is a name "
                             "or path, not a module")
        model = base_model
    else:
        model = _load_base(payload, base_model, revision, token, from_pretrained_kwargs)
    changed_path = os.path.join(folder, CHANGED_NAME)
    if payload["changed_parameters"]:
        if not os.path.isfile(changed_path):
            raise UsageError(f"from_pretrained: {folder!r} lists changed parameters but has no {CHANGED_NAME}")
        _load_changed_(model, load_verified(changed_path, payload.get("changed_parameters_sha256")), folder)
    # the masks file sets every mask, so skip the initial magnitude top-k (the same layers are chosen)
    with warnings.catch_warnings():  # sparsity 0 here is deliberate: the masks file sets every mask next
        warnings.simplefilter("ignore", MaskSparsityWarning)
        apply_masks_(model, mask_config.replace(sparsity=0.0) if mask_config.score_init in ("magnitude", "uniform")
                     else mask_config)
    setattr(model, CONFIG_ATTR, mask_config)  # the config the masks were made with, for a later save
    load_masks(model, os.path.join(folder, MASKS_NAME))
    return model



def _adapter_folder(adapter, adapter_revision, token) -> str:
    path = os.fspath(adapter)
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.count("/") != 1:
        raise UsageError(f"from_pretrained: adapter {path!r} is neither an adapter folder nor a hub repo id "
                         "('user/name')")
    try:
        return huggingface_hub.snapshot_download(path, revision=adapter_revision, token=token,
                                                 allow_patterns=[CONFIG_NAME, MASKS_NAME, CHANGED_NAME])
    except Exception as err:  # offline, no such repo, no access: one message naming both readings
        raise UsageError(f"from_pretrained: no adapter folder {path!r} here, and fetching it as a hub repo failed "
                         f"({type(err).__name__}: {err})") from None


def _load_base(payload, base_model, revision, token, kwargs) -> nn.Module:
    recorded = payload["base_model"]
    name = os.fspath(base_model) if base_model is not None else recorded.get("name_or_path")
    if not name:
        raise UsageError("from_pretrained: the adapter records no base model; pass base_model= (name, path or module)")
    if revision is None and base_model is None:
        revision = recorded.get("revision")
    config_data = dict(payload["model_config"])
    model_type = config_data.pop("model_type", None)
    config_cls = transformers.CONFIG_MAPPING[model_type] if model_type in transformers.CONFIG_MAPPING else None
    if config_cls is None:
        raise UsageError(f"from_pretrained: this transformers has no model type {model_type!r} (upgrade it)")
    config = config_cls.from_dict(config_data)
    model_cls = getattr(transformers, payload["model_class"], None) or transformers.AutoModel
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"  # renamed in v5
    # the head may differ in size from the base checkpoint's: the adapter's changed parameters replace it
    options = {dtype_key: getattr(torch, payload.get("dtype", "float32")), "ignore_mismatched_sizes": True}
    options.update(kwargs)
    if token is not None:
        options["token"] = token
    return model_cls.from_pretrained(name, config=config, revision=revision or "main", **options)


@torch.no_grad()
def _load_changed_(model: nn.Module, changed: dict[str, torch.Tensor], folder: str) -> None:
    state = model.state_dict()
    unknown = sorted(set(changed) - set(state))
    wrong = [f"{k}: adapter {tuple(v.shape)}, model {tuple(state[k].shape)}" for k, v in changed.items()
             if k in state and tuple(v.shape) != tuple(state[k].shape)]
    if unknown or wrong:
        raise UsageError(f"from_pretrained: the adapter in {folder!r} does not fit this base model: parameters it "
                         f"lacks {unknown[:5]}; shape mismatches {wrong[:5]}")
    model.load_state_dict(changed, strict=False)


