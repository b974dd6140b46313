"""Atomic checkpoints: training state (model, optimizer, scheduler, RNG, data position) in one file.

A checkpoint is read with torch's weights-only unpickler, so a file planted in a shared run folder
cannot run code when the run resumes: everything in it is tensors, numbers, strings, lists, tuples
and dicts. The RNG states are stored that way too (Python's and NumPy's Mersenne Twister keys as
int64 tensors). A file that does not load (truncated, foreign, or pickling anything else) raises
UnreadableCheckpointError naming it; `set_aside` moves it out of the way so the run can start over.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Callable

import numpy as np
import torch

from maskedbert._atomic import atomic_path, set_aside

__all__ = ["atomic_torch_save", "capture_rng_state", "restore_rng_state", "save_checkpoint", "load_checkpoint",
           "load_weights", "set_aside", "UnreadableCheckpointError", "checkpoint_listener"]

# called as listener(path, step, total_steps) after every training checkpoint this process saves (a
# study counts its cells' progress this way)
_LISTENERS: list[Callable[[str, int, int], None]] = []


@contextlib.contextmanager
def checkpoint_listener(listener: Callable[[str, int, int], None]):
    """Call `listener(path, step, total_steps)` after each save_checkpoint inside the block."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read as a weights-only checkpoint."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"unreadable checkpoint {path}: {reason}")
        self.path, self.reason = path, reason


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temp file beside `path`, then os.replace: readers never see a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)  # through a Python file: a full disk surfaces as an OSError with its errno


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as types the weights-only unpickler accepts."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": int(version), "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)
    for listener in list(_LISTENERS):
        listener(path, int(state.get("global_step", 0)), int(state.get("total_steps", 0)))


def _load_weights_only(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, anything the safe unpickler refuses
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableCheckpointError(path, f"{type(exc).__name__}: {reason}") from None


def load_checkpoint(path: str) -> dict[str, Any]:
    """The state saved by save_checkpoint; UnreadableCheckpointError when the file does not load as one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = _load_weights_only(path)
    if not isinstance(state, dict) or "model" not in state or "global_step" not in state:
        raise UnreadableCheckpointError(path, "not a maskedbert training checkpoint")
    return state


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save (best_model.pt and the like), read weights-only."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights at {path}")
    state = _load_weights_only(path)
    if not isinstance(state, dict):
        raise UnreadableCheckpointError(path, "not a state dict")
    return state
