"""maskedbert: fused Triton kernels for mask training and pruning of Hugging Face encoders.

Top-level names load lazily so that `import maskedbert` stays cheap and does not pull in
transformers or datasets (the GPU benchmark machine has no `datasets`).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY_ATTRS = {
    "masked_linear": "maskedbert.kernels",
    "topk_mask": "maskedbert.kernels",
    "MaskedLinear": "maskedbert.modules",
    "MaskConfig": "maskedbert.config",
    "apply_masks_": "maskedbert.patching",
    "merge_and_unload": "maskedbert.patching",
    "sparsity_report": "maskedbert.patching",
    "save_masks": "maskedbert.masks",
    "load_masks": "maskedbert.masks",
    "load_mask_dict": "maskedbert.masks",
    "save_pretrained": "maskedbert.adapters",
    "from_pretrained": "maskedbert.adapter_loading",
    "disable_masks": "maskedbert.patching",
    "trainable_parameters": "maskedbert.patching",
    "print_trainable_parameters": "maskedbert.patching",
    "masked_modules": "maskedbert.masks",
}
# public submodules reachable as attributes: mb.losses.product_of_experts, mb.optim.AdamW, ...
_LAZY_SUBMODULES = {
    "kernels", "losses", "optim", "bias", "data", "metrics", "train", "experiments",
    "modules", "config", "patching", "masks", "pruning", "evaluation", "models", "adapters", "integrations",
    "peft_format", "log",
}

__all__ = sorted(_LAZY_ATTRS) + sorted(_LAZY_SUBMODULES)


def __getattr__(name: str):
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    elif name in _LAZY_SUBMODULES:
        value = importlib.import_module(f"maskedbert.{name}")
    else:
        raise AttributeError(f"module 'maskedbert' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
