"""Checksums for the safetensors files maskedbert writes (mask files, adapters' changed parameters).

safetensors checks a file's layout, not its bytes: a flipped bit in a tensor loads silently as another
mask or weight. Writers record a SHA-256 of the tensors (names, dtypes, shapes and bytes, in name order)
beside them (a mask file in its JSON metadata, an adapter in mask_config.json); readers recompute it and
raise ChecksumMismatchError naming the file when it differs. A file without one loads unchecked.
The digest lives inside a single metadata entry, never as a second safetensors metadata key:
safetensors writes several keys in a per-process order, and the same masks must give the same bytes.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import torch
from safetensors.torch import load_file

__all__ = ["ChecksumMismatchError", "tensors_digest", "verify_checksum", "load_verified"]


class ChecksumMismatchError(ValueError):
    """A file's tensors do not hash to the checksum stored with them: the file was damaged after writing."""


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def verify_checksum(tensors: Mapping[str, torch.Tensor], expected: str | None, path: str | os.PathLike) -> None:
    if expected is None:
        return  # written before checksums (or by another tool)
    actual = tensors_digest(tensors)
    if actual != expected:
        raise ChecksumMismatchError(f"{os.fspath(path)!r} is damaged: its tensors hash to sha256 {actual[:16]}..., "
                                    f"the file records {expected[:16]}...; write it again (or restore a copy)")


def load_verified(path: str | os.PathLike, expected: str | None) -> dict[str, torch.Tensor]:
    """safetensors.torch.load_file on the CPU, checked against the digest `expected` (None: unchecked)."""
    tensors = load_file(os.fspath(path))
    verify_checksum(tensors, expected, path)
    return tensors
