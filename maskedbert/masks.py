"""Mask files: bit-packed masks in a safetensors file, keyed by module name.

Layout: one uint8 tensor per mask, packed with maskedbert.kernels.pack_mask (format version
PACKED_FORMAT_VERSION: bit k%8 of byte k//8 holds column k of a row). A mask of any shape is stored
as [shape[0], prod(shape[1:])] (a 1-D mask as one row) and its shape kept in the metadata. The
safetensors metadata key "maskedbert" holds JSON:
    {"format_version": 1, "maskedbert_version": "...", "sparsity": overall pruned fraction,
     "masks": {name: {"shape": [...], "kept": int, "sparsity": float}}, "sha256": digest of the tensors}
Files are written to a temporary file in the same folder and renamed into place, so a crash never
leaves a half-written file.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import maskedbert
from maskedbert._atomic import atomic_path
from maskedbert.checksums import tensors_digest, verify_checksum
from maskedbert.errors import UsageError
from maskedbert.kernels import PACKED_FORMAT_VERSION, pack_mask, unpack_mask
from maskedbert.kernels._describe import describe as _describe
from maskedbert.modules import MaskedLinear

METADATA_KEY = "maskedbert"


def masked_modules(model: nn.Module, module_types: tuple[type, ...] | None = None) -> dict[str, nn.Module]:
    """The masked layers of `model`: {name: layer}, each layer once under the first name that reaches it
    (ALBERT's shared layer appears once), in model order. `module_types`: the classes that count as
    masked layers (default maskedbert.modules.MaskedLinear). The one definition: maskedbert.patching
    re-exports it."""
    if module_types is None:
        module_types = (MaskedLinear,)
    return {name: m for name, m in model.named_modules() if isinstance(m, module_types)}


def save_masks(
    model_or_masks: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    module_types: tuple[type, ...] | None = None,
) -> None:
    """Save every masked layer's mask (or a {name: bool tensor} dict) to a safetensors file at `path`.

    `module_types`: the classes that count as masked layers (default: maskedbert.modules.MaskedLinear).
    """
    if isinstance(model_or_masks, nn.Module):
        modules = masked_modules(model_or_masks, module_types)
        if not modules:
            raise ValueError("model_or_masks has no masked layers to save (apply_masks_ first?)")
        masks = {name: m.mask() for name, m in modules.items()}
    elif isinstance(model_or_masks, Mapping):
        masks = dict(model_or_masks)
    else:
        raise TypeError(
            f"model_or_masks must be an nn.Module or a dict of bool tensors, got {type(model_or_masks).__name__}"
        )
    for name, mask in masks.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"mask names must be non-empty strings, got {name!r}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask {name!r} must be a bool tensor, got {_describe(mask)}")
    if "__metadata__" in masks:  # safetensors' header keeps this key for the metadata
        raise ValueError("'__metadata__' is reserved by safetensors and cannot be a mask name")

    tensors, entries = {}, {}
    total, total_kept = 0, 0
    for name, mask in masks.items():
        cpu = mask.detach().to("cpu")
        kept = int(cpu.sum())
        tensors[name] = pack_mask(_as_rows(cpu).contiguous())
        entries[name] = {"shape": list(cpu.shape), "kept": kept, "sparsity": _sparsity(kept, cpu.numel())}
        total += cpu.numel()
        total_kept += kept
    metadata = {
        "format_version": PACKED_FORMAT_VERSION,
        "maskedbert_version": _package_version(),
        "sparsity": _sparsity(total_kept, total),
        "masks": entries,
        "sha256": tensors_digest(tensors),  # of the packed tensors, checked on load (maskedbert.checksums)
    }
    _write_atomic(tensors, {METADATA_KEY: json.dumps(metadata)}, os.fspath(path))


def load_mask_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a mask file into {name: bool tensor} on the CPU, checking it against its own metadata."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no mask file at {path!r}")
    with safe_open(path, framework="pt", device="cpu") as f:
        metadata = read_metadata_from(f.metadata(), path)
        names = set(f.keys())
        listed = set(metadata["masks"])
        if names != listed:
            raise ValueError(
                f"{path!r} is inconsistent: tensors {sorted(names - listed)} are not in its metadata and "
                f"metadata entries {sorted(listed - names)} have no tensor"
            )
        masks, stored = {}, {}
        for name in sorted(names):
            shape = _entry_shape(metadata["masks"][name], name, path)
            packed = stored[name] = f.get_tensor(name)
            rows, cols = _rows_cols(shape)
            if packed.dtype != torch.uint8 or tuple(packed.shape) != (rows, (cols + 7) // 8):
                raise ValueError(
                    f"{path!r}: mask {name!r} of shape {shape} must be stored as uint8 "
                    f"[{rows}, {(cols + 7) // 8}], found {_describe(packed)}"
                )
            masks[name] = unpack_mask(packed, cols).reshape(shape)
        verify_checksum(stored, metadata.get("sha256"), path)
    return masks


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a mask file (format version, shapes, sparsities)."""
    with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
        return read_metadata_from(f.metadata(), os.fspath(path))


def read_metadata_from(raw: dict | None, path: str) -> dict:
    if not raw or METADATA_KEY not in raw:
        raise ValueError(f"{path!r} is not a maskedbert mask file (no {METADATA_KEY!r} metadata)")
    try:
        metadata = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r} has unreadable mask metadata: {err}") from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != PACKED_FORMAT_VERSION:
        raise ValueError(f"{path!r} has mask format version {version!r}; this maskedbert reads {PACKED_FORMAT_VERSION}")
    if not isinstance(metadata.get("masks"), dict):
        raise ValueError(f"{path!r} has no 'masks' table in its metadata")
    return metadata


def load_masks(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    module_types: tuple[type, ...] | None = None,
) -> nn.Module:
    """Set the masks of `model`'s masked layers from a file written by save_masks; returns `model`.

    Everything is checked before any layer changes: with strict=True the file and the model must
    name the same masked layers; shapes must always match. strict=False loads the layers both have.
    A model without masked layers is a UsageError that says to call apply_masks_ first.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    modules = masked_modules(model, module_types)
    if not modules:
        raise UsageError(
            f"load_masks: model ({type(model).__name__}) has no masked layers yet; call "
            "mb.apply_masks_(model, config) first (with the MaskConfig the masks were made with, e.g. "
            "MaskConfig.load(adapter_dir) or its mask_config.json), then load_masks; mb.from_pretrained(adapter_dir) does both"
        )
    masks = load_mask_dict(path)
    missing = sorted(set(modules) - set(masks))
    unexpected = sorted(set(masks) - set(modules))
    if strict and (missing or unexpected):
        raise ValueError(
            f"mask file {os.fspath(path)!r} does not match the model: masked layers without a mask in the file "
            f"{missing}; masks in the file for layers the model lacks {unexpected} (strict=False loads the common ones)"
        )
    common = [name for name in modules if name in masks]
    if not common:
        raise ValueError(f"mask file {os.fspath(path)!r} has no mask for any masked layer of the model")
    wrong = [
        f"{name}: file {tuple(masks[name].shape)}, model {tuple(modules[name].weight.shape)}"
        for name in common
        if tuple(masks[name].shape) != tuple(modules[name].weight.shape)
    ]
    if wrong:
        raise ValueError(f"mask shapes do not match the model's weights: {'; '.join(wrong)}")
    for name in common:
        modules[name].set_mask_(masks[name].to(modules[name].weight.device))
    return model


def _entry_shape(entry, name: str, path: str) -> tuple[int, ...]:
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"{path!r}: mask {name!r} has no valid 'shape' in its metadata, got {shape!r}")
    return tuple(shape)


def _write_atomic(tensors: dict, metadata: dict, path: str) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def _as_rows(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = _rows_cols(tuple(mask.shape))
    return mask.reshape(rows, cols)


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def _sparsity(kept: int, numel: int) -> float:
    return 0.0 if numel == 0 else 1.0 - kept / numel


def _package_version() -> str:
    return str(getattr(maskedbert, "__version__", "unknown"))
