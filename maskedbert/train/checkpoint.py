"""Atomic checkpoints: training state (model, optimizer, scheduler, RNG, data position) in one file."""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from maskedbert._atomic import atomic_path

__all__ = ["atomic_torch_save", "capture_rng_state", "restore_rng_state", "save_checkpoint", "load_checkpoint"]


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temp file beside `path`, then os.replace: readers never see a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    # the state holds RNG tuples and numpy arrays, which the weights-only unpickler refuses
    return torch.load(path, map_location="cpu", weights_only=False)
