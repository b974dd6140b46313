"""Launch-time helpers shared by every Triton launcher: interpreter mode, device checks, autotune.

triton is optional (no wheel for macOS or Windows): nothing here imports it at module import time.
The kernel modules (`*_kernel.py`, `topk_radix.py`) import it, and only the Triton launchers import
those, so the PyTorch twins run without it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os

import torch

TRITON_BACKENDS = ("triton", "triton_dense", "triton_fused")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether `import triton` works here (cached; the answer does not change within a process)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def missing_triton_error(backend: str) -> ImportError:
    return ImportError(
        f"backend={backend!r} needs the triton package (Linux + NVIDIA GPU): pip install triton; "
        "use backend='torch' or 'auto'"
    )


def require_triton(backend: str = "triton") -> None:
    """Raise a clear ImportError naming the fix when a Triton backend is asked for without triton."""
    if not triton_available():
        raise missing_triton_error(backend)


def interpreting() -> bool:
    """True when Triton kernels run on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_triton_tensors(**tensors: torch.Tensor | None) -> None:
    """Fail clearly when a Triton kernel cannot run on these tensors."""
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device.type == "cuda":
            continue
        if t.device.type == "cpu" and interpreting():
            continue
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors, but {name} is on {t.device}; use backend='torch' "
            "(or 'auto'), or set TRITON_INTERPRET=1 before importing maskedbert to run the kernels on CPU"
        )


def autotune_configs(configs: list) -> list:
    """The interpreter cannot benchmark (no GPU driver): keep the first config only."""
    return configs[:1] if interpreting() else configs


# an FMA dot (fp32 operands, IEEE precision: no tensor cores) holds its accumulator in registers;
# more than this many accumulator elements per thread spill (bench/NOTES.md, compile report)
FMA_ACC_PER_THREAD = 32


def shared_memory_limit(device: torch.device) -> int:
    """Shared memory one block may use on `device` (the opt-in maximum); unbounded off CUDA."""
    if device.type != "cuda":
        return 1 << 40
    return _cuda_shared_memory_limit(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_shared_memory_limit(index: int) -> int:
    from triton.runtime import driver

    return driver.active.utils.get_device_properties(index)["max_shared_mem"]


def has_wgmma(device: torch.device) -> bool:
    """Hopper's warp-group MMA (sm_90): accumulators of big tiles fit its register layout."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def launchable_configs(configs, device, shared_bytes, acc_elements=None, acc_limit: int | None = None):
    """The autotune configs that should run on `device` (for prune_configs_by): estimated shared
    memory (`shared_bytes(config)`) within the block limit and, when `acc_limit` is given, at most
    that many accumulator elements (`acc_elements(config)`) per thread (more spill registers).
    Never empty: falls back to the config needing the least shared memory."""
    limit = shared_memory_limit(device)
    kept = [c for c in configs if shared_bytes(c) <= limit
            and not (acc_limit and acc_elements(c) > acc_limit * 32 * c.num_warps)]
    return kept or [min(configs, key=shared_bytes)]


def size_bucket(n: int) -> int:
    """Power-of-two bucket used as an autotune key, so new sequence lengths don't re-tune."""
    return 1 << max(0, int(n - 1).bit_length())


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_sms(t: torch.Tensor) -> int:
    return sm_count(t.device.index or 0) if t.device.type == "cuda" else 8


def dot_precision(dtype: torch.dtype) -> str:
    """Match torch's float32 matmul numerics (TF32 only when torch allows it); other dtypes keep
    Triton's default, which only affects float32 operands anyway."""
    if dtype == torch.float32 and not fp32_matmul_allows_tf32():
        return "ieee"
    return "tf32"


def fp32_matmul_allows_tf32() -> bool:
    """Whether torch lets float32 CUDA matmuls use TF32, by whichever API the user set it with:
    `torch.backends.cuda.matmul.fp32_precision` (torch >= 2.9; "none" defers to
    `torch.backends.fp32_precision`) or the older `allow_tf32`. Reading `allow_tf32` after the new
    API was used raises in torch, so the new one is read first."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision == "none":
        precision = getattr(torch.backends, "fp32_precision", "none")
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    try:
        return bool(matmul.allow_tf32)
    except RuntimeError:  # a mix of the two APIs: torch refuses to say; IEEE is the safe answer
        return False


def deterministic() -> bool:
    """torch.use_deterministic_algorithms(True) is on: no float atomics, fixed kernel configs."""
    return torch.are_deterministic_algorithms_enabled()


def cuda_device_of(t: torch.Tensor):
    """Launch on the tensor's GPU, whatever the current device is (Triton launches on the current one)."""
    if t.is_cuda and t.get_device() != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return _NULL_CONTEXT


_NULL_CONTEXT = contextlib.nullcontext()


def on_other_cuda_device(t: torch.Tensor) -> bool:
    """Whether launching for `t` needs `torch.cuda.device(t.device)` around it (cuda_device_of as a
    test, for launchers that skip the `with` statement's cost in the common case)."""
    return t.is_cuda and t.get_device() != torch.cuda.current_device()


def launch_autotuned(tuner, grid, *args, **kwargs):
    """Launch an @triton.autotune kernel; in deterministic mode with one fixed config (the first its
    prune_configs_by keeps for these arguments), so results do not depend on a timing race."""
    if not deterministic() or len(tuner.configs) <= 1:
        return tuner[grid](*args, **kwargs)
    configs = list(tuner.configs)
    prune = getattr(tuner, "early_config_prune", None)
    if prune:
        configs = prune(configs, dict(zip(tuner.arg_names, args)), **kwargs) or configs
    config = configs[0]
    return tuner.fn[grid](*args, **kwargs, **config.all_kwargs())


def check_int32_offsets(op: str, **tensors: torch.Tensor | None) -> None:
    """The Triton GEMM kernels index with int32 element offsets: refuse a tensor whose last element
    lies 2**31 or more elements past its first (a clear error instead of wrapped addresses)."""
    for name, t in tensors.items():
        if t is None:
            continue
        numel = t.numel()
        if numel == 0 or (numel <= 2**31 and t.is_contiguous()):  # spans numel - 1 elements: no sum needed
            continue
        if sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) >= 2**31:
            raise ValueError(
                f"{op}: {name} of shape {tuple(t.shape)} spans 2**31 or more elements, beyond the Triton "
                "kernels' int32 offsets; pass fewer tokens per call or use backend='torch'"
            )


def resolve_backend(backend: str, device: torch.device, allowed: tuple[str, ...] = ("auto", "torch", "triton")) -> str:
    """'auto' means Triton on CUDA (when triton is installed) and the PyTorch twin elsewhere; a
    Triton backend without triton installed is a clear ImportError."""
    if backend not in allowed:
        raise ValueError(f"backend must be one of {allowed}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend in TRITON_BACKENDS:
        require_triton(backend)
    return backend
