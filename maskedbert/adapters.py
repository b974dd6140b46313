"""Mask adapters: share a subnetwork as its bit-packed mask over a public checkpoint (PEFT-style).

    mb.save_pretrained(model, "adapter/")                      # base recorded from model.config._name_or_path
    model = mb.from_pretrained("adapter/")                     # loads that base, applies the masks
    model = mb.from_pretrained("adapter/", base_model=model0)  # or a base you already hold (name, path, module)

An adapter folder holds
- mask_config.json: the MaskConfig, the base model (name or path, and revision when known), the task
  model's class and transformers config (so the head has the right size), the weights' dtype,
  maskedbert's version, the adapter and mask format versions, and the names of the changed parameters;
- masks.safetensors: every mask, bit-packed (maskedbert.masks; BERT-base's 85M masked weights ~ 10.6 MB);
- changed_parameters.safetensors: only the parameters that differ from the base checkpoint (a trained
  head; every weight when the weights trained, as in IMP), absent when nothing changed;
- README.md: a model card with the Hub metadata `base_model`, `library_name: maskedbert` and
  `mask_sparsity`, and how to load and merge the adapter (maskedbert.adapter_card).
The mask scores themselves are not kept: the loaded model has scores 2*tau (kept) and 0 (pruned),
which gives the same mask, so the logits are identical to the saved model's.

Loading (`from_pretrained`) lives in maskedbert.adapter_loading: it applies masks (maskedbert.patching),
whose save guard writes adapters with this module, so saving stays below patching and loading above it.

A masked model's own `model.save_pretrained(dir)` writes the same adapter (maskedbert.save_guard), so
`transformers.Trainer.save_model()` and `model.push_to_hub()` work on a masked model. PEFT's argument
order `mb.from_pretrained(model, "adapter/")` is accepted too.

Every file is written atomically, mask_config.json last, so a folder with mask_config.json is
complete. `push_to_hub=True` uploads the folder with huggingface_hub (needs a network; here only its
argument handling is tested).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

import huggingface_hub
import torch
from safetensors.torch import save_file
from torch import nn

import maskedbert
from maskedbert._atomic import atomic_path, write_text_atomic
from maskedbert.adapter_card import write_model_card
from maskedbert.checksums import tensors_digest
from maskedbert.config import CONFIG_ATTR
from maskedbert.errors import UsageError
from maskedbert.kernels import PACKED_FORMAT_VERSION
from maskedbert.masks import masked_modules, save_masks
from maskedbert.modules import MaskedLinear

__all__ = ["save_pretrained", "write_adapter_folder", "read_adapter_config", "BaseReference", "ADAPTER_FORMAT_VERSION",
           "CONFIG_NAME", "MASKS_NAME", "CHANGED_NAME", "README_NAME", "SparsityDriftWarning"]

ADAPTER_FORMAT_VERSION = 1
CONFIG_NAME = "mask_config.json"
MASKS_NAME = "masks.safetensors"
CHANGED_NAME = "changed_parameters.safetensors"
_FORMAT = "maskedbert-mask-adapter"
_MASK_STATE = ("scores", "threshold_tensor", "packed_mask")  # MaskedLinear state the masks file replaces
README_NAME = "README.md"
# set on a model whose sparsity a schedule or controller sets (MaskTrainingCallback): no drift warning then
SPARSITY_CONTROLLED_ATTR = "maskedbert_sparsity_controlled"
_DRIFT_TOLERANCE = 0.005  # |measured - MaskConfig.sparsity| above this after score training gets a warning


class SparsityDriftWarning(UserWarning):
    """A score mask trained with a fixed threshold no longer has the sparsity its MaskConfig asked for."""


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    base_model: str | os.PathLike | nn.Module | None = None,
    base_model_name_or_path: str | None = None,
    revision: str | None = None,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload maskedbert mask adapter",
    base_reference: "BaseReference | None" = None,
) -> dict[str, Any]:
    """Write `model`'s mask adapter to `save_directory`; returns the content of mask_config.json.

    base_model: what "unchanged" is measured against. None: the checkpoint the model was loaded from
        (model.config._name_or_path, at `revision` or the recorded commit); a name or path to load; or
        an unmasked nn.Module holding the base weights (then base_model_name_or_path names it for
        from_pretrained; default its config._name_or_path).
    push_to_hub / repo_id / private / token / commit_message: upload the folder afterwards.
    base_reference: a BaseReference of this model from an earlier save (instead of base_model and
        revision): the base is not loaded again. The Trainer's checkpoints use it (maskedbert.save_guard).
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"save_pretrained: model must be a torch.nn.Module, got {type(model).__name__}")
    layers = masked_modules(model)
    mask_config = getattr(model, CONFIG_ATTR, None)
    if not layers or mask_config is None:
        raise UsageError("save_pretrained: model has no masks (mb.apply_masks_(model, config) first); a plain "
                         "model saves with its own model.save_pretrained(dir)")
    if push_to_hub and not (isinstance(repo_id, str) and repo_id.count("/") <= 1 and repo_id.strip("/")):
        raise UsageError(f"save_pretrained: push_to_hub=True needs repo_id='user/name', got repo_id={repo_id!r}")
    if not push_to_hub and repo_id is not None:
        raise UsageError("save_pretrained: repo_id is only used with push_to_hub=True")
    model_config = getattr(model, "config", None)
    if model_config is None or not hasattr(model_config, "to_dict"):
        raise UsageError("save_pretrained: model has no transformers config (model.config); mask adapters are "
                         "for Hugging Face models")
    if base_reference is None:
        base_reference = BaseReference.resolve(model, base_model, base_model_name_or_path, revision)
    elif base_model is not None or base_model_name_or_path is not None or revision is not None:
        raise UsageError("save_pretrained: give base_reference or base_model/base_model_name_or_path/revision, not both")
    name_or_path, revision = base_reference.name_or_path, base_reference.revision
    changed = base_reference.changed(model)

    payload = {
        "format": _FORMAT,
        "adapter_format_version": ADAPTER_FORMAT_VERSION,
        "mask_format_version": PACKED_FORMAT_VERSION,
        "maskedbert_version": str(maskedbert.__version__),
        "mask_config": mask_config.to_dict(),
        "base_model": {"name_or_path": name_or_path, "revision": revision},
        "model_class": type(model).__name__,
        "model_config": _plain_config(model_config),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "changed_parameters": sorted(changed),
        "changed_parameters_sha256": tensors_digest(changed) if changed else None,  # checked on load
        "sparsity": _masked_sparsity(layers),
    }
    folder = write_adapter_folder(save_directory, model, changed, payload, repo_id=repo_id)
    if not getattr(model, SPARSITY_CONTROLLED_ATTR, False):
        _warn_if_drifted(mask_config, payload["sparsity"])
    if push_to_hub:
        _push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)
    return payload


def write_adapter_folder(save_directory: str | os.PathLike, masks, changed: dict[str, torch.Tensor],
                         payload: dict[str, Any], *, repo_id: str | None = None) -> str:
    """Write an adapter folder: the bit-packed masks (`masks`: a masked model or {layer name: bool mask}),
    the changed parameters (or remove an older file of them), the model card, then mask_config.json
    last, so a folder with mask_config.json is complete. Returns the folder."""
    folder = os.fspath(save_directory)
    os.makedirs(folder, exist_ok=True)
    save_masks(masks, os.path.join(folder, MASKS_NAME))
    changed_path = os.path.join(folder, CHANGED_NAME)
    if changed:
        with atomic_path(changed_path) as tmp:
            save_file(changed, tmp, metadata={"format": _FORMAT})
    elif os.path.exists(changed_path):  # an older adapter in the same folder
        os.unlink(changed_path)
    write_model_card(folder, payload, repo_id=repo_id)
    write_text_atomic(os.path.join(folder, CONFIG_NAME), json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return folder


def read_adapter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """mask_config.json of an adapter folder, checked (format and versions)."""
    folder = os.fspath(folder)
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(folder, "config.json")):
            raise UsageError(f"from_pretrained: {folder!r} is a plain transformers checkpoint (config.json, no "
                             f"{CONFIG_NAME}), not a mask adapter: load it with transformers' "
                             "AutoModel...from_pretrained (or pass it as base_model=)")
        if os.path.isfile(os.path.join(folder, "adapter_config.json")):
            raise UsageError(f"from_pretrained: {folder!r} is a PEFT adapter (adapter_config.json): load it with "
                             "peft.PeftModel.from_pretrained(base, folder)")
        raise UsageError(f"from_pretrained: {folder!r} is not a mask adapter (no {CONFIG_NAME}); "
                         "write one with mb.save_pretrained(model, dir)")
    with open(path, encoding="utf-8") as f:
        try:
            payload = json.load(f)
        except json.JSONDecodeError as err:
            raise UsageError(f"from_pretrained: {path!r} is not valid JSON ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise UsageError(f"from_pretrained: {path!r} is not a maskedbert mask adapter config")
    version = payload.get("adapter_format_version")
    if version != ADAPTER_FORMAT_VERSION:
        raise UsageError(f"from_pretrained: {path!r} has adapter format version {version!r}; this maskedbert "
                         f"reads version {ADAPTER_FORMAT_VERSION} (upgrade maskedbert)")
    return payload


# ---- saving ------------------------------------------------------------------------------------

def _resolve_base_for_saving(model, base_model, base_name, revision):
    """(base state dict, missing-from-base names), name_or_path, revision."""
    config = model.config
    if isinstance(base_model, nn.Module):
        if masked_modules(base_model):
            raise UsageError("save_pretrained: base_model has masks; pass the unmasked base model")
        name = base_name or getattr(getattr(base_model, "config", None), "_name_or_path", None) or None
        return (_plain_state(base_model), set()), name, revision
    name = os.fspath(base_model) if base_model is not None else (base_name or config._name_or_path or None)
    if not name:
        raise UsageError("save_pretrained: the model records no base checkpoint (model.config._name_or_path is "
                         "empty, e.g. a model built from a config); pass base_model= (its name, path or an "
                         "unmasked copy) so that only the parameters that changed are saved")
    revision = revision or getattr(config, "_commit_hash", None)
    try:
        # a base with another head size (ignore_mismatched_sizes) counts that head as changed
        base, info = type(model).from_pretrained(name, config=config, revision=revision or "main",
                                                 output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"save_pretrained: cannot load the base model {name!r} to find the changed parameters "
                         f"({err}); pass base_model= (a name, path or the unmasked module)") from None
    new_in_base = set(info.get("missing_keys", ())) | {k[0] if isinstance(k, tuple) else k
                                                       for k in info.get("mismatched_keys", ())}
    return (_plain_state(base), new_in_base), name if base_name is None else base_name, revision


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


class BaseReference:
    """The base checkpoint an adapter is measured against, reduced to what can still differ: the base's
    values of the trainable parameters and of the buffers, and the names of the frozen parameters that
    already differ. A training run's checkpoints reuse one, so the base is loaded once per run, and
    only the tensors that can change are kept (the head, in mask training)."""

    def __init__(self, model: nn.Module, base_state: dict[str, torch.Tensor], missing_in_base: set[str],
                 name_or_path: str | None, revision: str | None):
        self.name_or_path, self.revision = name_or_path, revision
        self.missing = set(missing_in_base)
        self.watched: dict[str, torch.Tensor | None] = {}  # can change: compared at every save
        self.frozen_changed: set[str] = set()               # frozen, and already different from the base
        for key, value in _adapter_state(model, keep_vars=True):
            if _can_change(value):
                self.watched[key] = base_state.get(key)
            elif not self._same(key, value, base_state.get(key)):
                self.frozen_changed.add(key)

    @classmethod
    def resolve(cls, model, base_model=None, base_name=None, revision=None) -> "BaseReference":
        (base_state, missing), name, revision = _resolve_base_for_saving(model, base_model, base_name, revision)
        return cls(model, base_state, missing, name, revision)

    def covers(self, model: nn.Module) -> bool:
        """Whether every tensor of `model` that can change now was watched when this was built."""
        return all(key in self.watched for key, value in _adapter_state(model, keep_vars=True) if _can_change(value))

    def changed(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors of model.state_dict() that the base lacks or holds with other values (mask state excluded)."""
        changed = {}
        for key, value in _adapter_state(model):
            differs = (not self._same(key, value, self.watched[key]) if key in self.watched
                       else key in self.frozen_changed)
            if differs:
                changed[key] = value.detach().to("cpu").contiguous().clone()  # clone: safetensors refuses shared storage
        return changed

    def _same(self, key: str, value: torch.Tensor, reference: torch.Tensor | None) -> bool:
        return (key not in self.missing and reference is not None and reference.shape == value.shape
                and torch.equal(reference.to(value.device, value.dtype), value.detach()))


def _adapter_state(model: nn.Module, keep_vars: bool = False):
    """(name, tensor) of model.state_dict() without the MaskedLinear state the masks file replaces."""
    for name, value in model.state_dict(keep_vars=keep_vars).items():
        owner, _, leaf = name.rpartition(".")
        if not (leaf in _MASK_STATE and isinstance(model.get_submodule(owner), MaskedLinear)):
            yield name, value


def _can_change(value: torch.Tensor) -> bool:
    # a frozen parameter only changes if someone assigns to it; buffers (running statistics) may change anyway
    return value.requires_grad if isinstance(value, nn.Parameter) else True


def _plain_config(config) -> dict[str, Any]:
    data = json.loads(config.to_json_string(use_diff=False))  # JSON types (lists, not tuples)
    for key in ("_name_or_path", "_commit_hash"):
        data.pop(key, None)
    return data


def _warn_if_drifted(mask_config, measured: float) -> None:
    """Score masks under a fixed threshold drift from the sparsity they started at; say how to hold it."""
    if mask_config.mode != "scores" or mask_config.sparsity == 0.0 or mask_config.score_init != "magnitude":
        return
    if abs(measured - mask_config.sparsity) > _DRIFT_TOLERANCE:
        warnings.warn(
            f"mask sparsity is {measured:.4f}, but MaskConfig.sparsity asked for {mask_config.sparsity:g}: with a "
            "fixed threshold the number of scores above it moves as they train. To hold a sparsity exactly, train with "
            "maskedbert.integrations.MaskTrainingCallback(method='exact_topk') or call "
            "maskedbert.pruning.exact_sparsity_(model, sparsity) after each optimizer step",
            SparsityDriftWarning, stacklevel=3)


def _masked_sparsity(layers) -> float:
    total = sum(m.weight.numel() for m in layers.values())
    kept = sum(int(m.mask().sum()) for m in layers.values())
    return 1.0 - kept / total if total else 0.0


def _push_folder(folder: str, repo_id: str, *, private, token, commit_message) -> None:
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message,
                      allow_patterns=[CONFIG_NAME, MASKS_NAME, CHANGED_NAME, README_NAME])

