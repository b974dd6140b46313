"""A mask adapter as a PEFT-style state dict and back (no `peft` import needed).

PEFT (checked against peft 0.21.2) has no supported way to add a tuner type from outside the package:
`peft.utils.register_peft_method` refuses a name that is not already a member of the closed enum
`peft.utils.peft_types.PeftType`, so a "maskedbert" tuner would mean patching PEFT's internals.
maskedbert therefore ships no PEFT tuner; docs/HUGGINGFACE.md says what an upstream change would need.
What it does ship is the conversion, so that tools built around PEFT's checkpoint layout can read and
write masks:

    state_dict, adapter_config = to_peft_state_dict("adapter/")     # PEFT's key layout, fp32 scores
    from_peft_state_dict(state_dict, adapter_config, "adapter2/")   # back to the bit-packed adapter

Key layout (PEFT's, for a tuner with prefix "maskedbert_"):
    base_model.model.<layer>.maskedbert_scores   fp32 [out, in]: 2*tau where kept, 0 where pruned
    base_model.model.<parameter>                 a changed parameter (PEFT's modules_to_save keys)
adapter_config holds peft_type "MASKEDBERT", base_model_name_or_path, target_modules (the masked
layers), modules_to_save (owners of the changed parameters), the threshold, and under "maskedbert" the
adapter's own mask_config.json, so the conversion back is exact. The scores cost 32 bits per weight
where the adapter's masks cost one: converting is for interchange, not for storage.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from maskedbert.adapters import _FORMAT, CHANGED_NAME, MASKS_NAME, read_adapter_config, write_adapter_folder
from maskedbert.checksums import tensors_digest
from maskedbert.errors import UsageError
from maskedbert.masks import load_mask_dict

__all__ = ["to_peft_state_dict", "from_peft_state_dict", "PEFT_PREFIX", "PEFT_TYPE", "KEY_PREFIX"]

PEFT_TYPE = "MASKEDBERT"
PEFT_PREFIX = "maskedbert_"
KEY_PREFIX = "base_model.model."  # PeftModel -> tuner model -> the wrapped transformers model
_SCORES = PEFT_PREFIX + "scores"


def to_peft_state_dict(adapter: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict in PEFT's key layout, adapter_config dict) for the mask adapter folder `adapter`."""
    folder = os.fspath(adapter)
    payload = read_adapter_config(folder)
    threshold = float(payload["mask_config"]["threshold"])
    kept, pruned = _kept_pruned(threshold)
    state = {f"{KEY_PREFIX}{name}.{_SCORES}": torch.where(mask, kept, pruned).to(torch.float32)
             for name, mask in load_mask_dict(os.path.join(folder, MASKS_NAME)).items()}
    changed = {}
    if payload["changed_parameters"]:
        changed = load_file(os.path.join(folder, CHANGED_NAME))
    state.update({KEY_PREFIX + name: value for name, value in changed.items()})
    config = {
        "peft_type": PEFT_TYPE,
        "base_model_name_or_path": payload["base_model"]["name_or_path"],
        "revision": payload["base_model"]["revision"],
        "target_modules": sorted(name[len(KEY_PREFIX):-len(_SCORES) - 1] for name in state if name.endswith(_SCORES)),
        "modules_to_save": sorted({name.rpartition(".")[0] for name in changed}),
        "threshold": threshold,
        "inference_mode": True,
        "maskedbert": payload,
    }
    return state, config


def from_peft_state_dict(state_dict: Mapping[str, torch.Tensor], adapter_config: Mapping[str, Any],
                         save_directory: str | os.PathLike) -> dict[str, Any]:
    """Write the mask adapter that `state_dict` / `adapter_config` (to_peft_state_dict's layout) describe
    into `save_directory`; returns its mask_config.json content. Masks are scores > threshold."""
    if adapter_config.get("peft_type") != PEFT_TYPE:
        raise UsageError(f"from_peft_state_dict: adapter_config peft_type is {adapter_config.get('peft_type')!r}, "
                         f"expected {PEFT_TYPE!r}")
    payload = adapter_config.get("maskedbert")
    if not isinstance(payload, Mapping) or payload.get("format") != _FORMAT:
        raise UsageError("from_peft_state_dict: adapter_config has no 'maskedbert' entry (the adapter's "
                         "mask_config.json, written by to_peft_state_dict); it records the model class and config")
    threshold = float(adapter_config.get("threshold", payload["mask_config"]["threshold"]))
    outside = [k for k in state_dict if not k.startswith(KEY_PREFIX)]
    if outside:
        raise UsageError(f"from_peft_state_dict: keys {outside[:3]} do not start with {KEY_PREFIX!r}")
    masks, changed = {}, {}
    for key, value in state_dict.items():
        name = key[len(KEY_PREFIX):]
        if name.endswith("." + _SCORES):
            masks[name[:-len(_SCORES) - 1]] = value.detach().to("cpu", torch.float32) > threshold
        else:
            changed[name] = value.detach().to("cpu").contiguous()
    if not masks:
        raise UsageError(f"from_peft_state_dict: no '*.{_SCORES}' tensors in the state dict")
    total = sum(m.numel() for m in masks.values())
    payload = {**payload, "changed_parameters": sorted(changed),
               "sparsity": 1.0 - sum(int(m.sum()) for m in masks.values()) / total}
    payload["changed_parameters_sha256"] = tensors_digest(changed) if changed else None  # checked on load
    write_adapter_folder(save_directory, masks, changed, payload)
    return payload


def _kept_pruned(threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    # the values MaskedLinear.set_mask_ writes, so loading the scores back gives the same layer state
    kept = 2.0 * threshold if threshold > 0 else threshold + 1.0
    pruned = 0.0 if threshold >= 0 else threshold - 1.0
    return torch.tensor(kept), torch.tensor(pruned)
