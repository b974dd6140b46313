"""Weight snapshots and rewinding (IMP resets the kept weights to a saved state)."""
from __future__ import annotations

import os
from typing import Mapping

import torch
from safetensors.torch import load_file
from torch import nn

from maskedbert.patching import masked_modules


def _score_ids(model: nn.Module) -> set[int]:
    return {id(m.scores) for m in masked_modules(model).values() if m.scores is not None}


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the task-head parameters (outside the base model, e.g. classifier.*)."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        return set()
    return {name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")}


def snapshot_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter except mask scores: the state IMP rewinds to."""
    scores = _score_ids(model)
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if id(p) not in scores}


@torch.no_grad()
def rewind_weights_(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                    rewind_classifier: bool = False) -> list[str]:
    """Copy `state` into the model's parameters (not scores or masks); returns the names restored.

    With rewind_classifier=False the task head keeps its current (trained) weights.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping name -> tensor, got {type(state).__name__}")
    scores = _score_ids(model)
    head = set() if rewind_classifier else head_parameter_names(model)
    params = {name: p for name, p in model.named_parameters() if id(p) not in scores and name not in head}
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"rewind state lacks parameter(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, param in params.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ValueError(f"rewind state {name!r} has shape {tuple(state[name].shape)}, "
                             f"the model's has {tuple(param.shape)}")
        param.copy_(state[name].to(param.device, param.dtype))
    return sorted(params)


def load_rewind_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights to rewind to from a model directory (model.safetensors / pytorch_model.bin) or a file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise ValueError(f"{path}: no model.safetensors or pytorch_model.bin to rewind to")
    if path.endswith(".safetensors"):
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return dict(state)
