"""Checksums for the safetensors files maskedbert writes (mask files, adapters' changed parameters).

safetensors checks a file's layout, not its bytes: a flipped bit in a tensor loads silently as another
mask or weight. Writers add a SHA-256 of the tensors (names, dtypes, shapes and bytes, in name order)
to the file's metadata under CHECKSUM_KEY; readers recompute it and raise ChecksumMismatchError
naming the file when it differs. Files written without one load as before.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import torch

__all__ = ["CHECKSUM_KEY", "ChecksumMismatchError", "tensors_digest", "with_checksum", "verify_checksum",
           "load_verified"]

CHECKSUM_KEY = "maskedbert_sha256"


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


def with_checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> dict[str, str]:
    """`metadata` plus the checksum of `tensors`, for safetensors' save_file(..., metadata=)."""
    return {**(metadata or {}), CHECKSUM_KEY: tensors_digest(tensors)}


def verify_checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None,
                    path: str | os.PathLike) -> None:
    expected = (metadata or {}).get(CHECKSUM_KEY)
    if expected is None:
        return  # written before checksums (or by another tool)
    actual = tensors_digest(tensors)
    if actual != expected:
        raise ChecksumMismatchError(f"{os.fspath(path)!r} is damaged: its tensors hash to sha256 {actual[:16]}..., "
                                    f"the file records {expected[:16]}...; write it again (or restore a copy)")


def load_verified(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """safetensors.torch.load_file on the CPU, with the checksum verified."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    verify_checksum(tensors, metadata, path)
    return tensors
