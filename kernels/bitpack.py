"""Bit-packed masks: 8 mask elements per byte (format documented in mask_prep.py)."""
from __future__ import annotations

import torch

from ._describe import describe as _describe
from ._runtime import resolve_backend
from .mask_prep import mask_prep_torch, mask_prep_triton, packed_cols

PACKED_FORMAT_VERSION = 1


def _prep(backend: str, device: torch.device):
    return mask_prep_triton if resolve_backend(backend, device) == "triton" else mask_prep_torch


def pack_mask(mask: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """bool [N, K] -> uint8 [N, ceil(K/8)]; bit k%8 of byte k//8 holds element k (LSB first)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise TypeError(f"mask must be a 2-D bool tensor, got {_describe(mask)}")
    _, packed, _ = _prep(backend, mask.device)(None, mask=mask, want_dense=False, want_packed=True)
    return packed


def unpack_mask(packed: torch.Tensor, num_cols: int, *, backend: str = "auto") -> torch.Tensor:
    """uint8 [N, ceil(K/8)] -> bool [N, K] with K = num_cols."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        raise TypeError(f"packed must be a 2-D uint8 tensor, got {_describe(packed)}")
    if packed.shape[1] != packed_cols(num_cols):
        raise ValueError(
            f"packed has {packed.shape[1]} bytes per row but num_cols={num_cols} needs {packed_cols(num_cols)}"
        )
    _, _, as_bool = _prep(backend, packed.device)(
        None, mask=packed, shape=(packed.shape[0], num_cols), want_dense=False, want_packed=False, want_bool=True
    )
    return as_bool
