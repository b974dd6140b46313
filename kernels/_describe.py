"""How error messages name a value they refuse: the one wording every layer uses."""
from __future__ import annotations

import torch


def describe(value) -> str:
    """'a float16 Tensor of shape (4, 8) on cuda:0' for tensors (and Parameters); the type's name otherwise."""
    if isinstance(value, torch.Tensor):
        return (f"a {str(value.dtype).removeprefix('torch.')} {type(value).__name__} of shape {tuple(value.shape)} "
                f"on {value.device}")
    return type(value).__name__
