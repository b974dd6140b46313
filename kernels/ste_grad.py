"""The weight-side gradients of a masked linear: dS, dW, db from dy [M, N] and x [M, K].

    G  = dy^T x                      [N, K] in fp32
    dS = G * W                       (scores, straight-through estimator)
    dW = G * M                       (weight, only when it trains)
    db = sum_m dy                    (bias)

Two implementations of the same signature (and a PyTorch twin):
- `ste_grad_cublas` (the default of the Triton paths): G from one cuBLAS GEMM with fp32 output,
  then one elementwise pass (ste_epilogue.py) writing dS and dW; db from torch.sum. No atomics:
  bitwise reproducible run to run.
- `ste_grad_triton`: one Triton GEMM with the epilogue fused (G never written). The output has few
  tiles at BERT shapes (768x768 is 36 tiles of 128x128 against 132 SMs), so the token range is split
  across programs (split-K), sized from the tile the autotuner chose, and partial results are added
  with relaxed atomics into zeroed fp32 outputs (in deterministic mode: no split, no atomics, one
  fixed config).
MASKEDBERT_STE_GRAD=triton|cublas (or a dispatch table, dispatch.py) picks one.
"""
from __future__ import annotations

import functools

import torch

from ._runtime import (check_int32_offsets, check_triton_tensors, cuda_device_of, deterministic, dot_precision,
                       interpreting, launch_autotuned, num_sms, require_triton, size_bucket)
from .ste_epilogue import ste_epilogue_torch, ste_epilogue_triton

MIN_TOKENS_PER_SPLIT = 512


def choose_split_m(M: int, N: int, K: int, sms: int, tile_n: int = 128, tile_k: int = 128,
                   min_tokens: int = MIN_TOKENS_PER_SPLIT, max_split: int = 8) -> int:
    """How many programs share each output tile's token range, for the tile the autotuner chose: the
    smallest split whose waves are >= 85% full (programs / (waves * sms)), else the fullest; each
    split keeps >= min_tokens tokens. E.g. 3072x768 in 128x128 tiles is 144 tiles on 132 SMs:
    unsplit, the second wave is 9% full (55% overall); split 4 fills 87%. An estimate of what pays,
    not a measurement: each extra split adds an atomic read-modify-write of the outputs."""
    tiles = -(-N // tile_n) * -(-K // tile_k)
    most = max(1, min(max_split, M // min_tokens))
    best, best_fill = 1, 0.0
    for split in range(1, most + 1):
        programs = tiles * split
        fill = programs / (-(-programs // sms) * sms)
        if fill >= 0.85:
            return split
        if fill > best_fill + 1e-9:
            best, best_fill = split, fill
    return best


def ste_grad_triton(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor,
    *, want_scores: bool, want_weight: bool, want_bias: bool,
    split_m: int | None = None,
):
    """Returns (dS fp32 or None, dW in weight.dtype or None, db fp32 or None) for dy [M, N], x [M, K].
    `split_m` fixes the token split (else: sized per chosen tile; 1 in deterministic mode)."""
    require_triton()
    from . import ste_grad_kernel as kernels  # looked up per launch, so tools can swap the kernel

    check_triton_tensors(dy=dy, x=x, weight=weight, packed=packed)
    check_int32_offsets("ste_grad", dy=dy, x=x, weight=weight)
    M, N = dy.shape
    K = x.shape[1]
    if M == 0 or N == 0 or K == 0:  # nothing to launch; the twin handles the empty sums
        return ste_grad_torch(dy, x, weight, packed, want_scores=want_scores, want_weight=want_weight,
                              want_bias=want_bias)
    if deterministic() or interpreting():
        split_m = 1
    if split_m is not None:
        split_m = max(1, min(split_m, M))
        atomic = split_m > 1
    else:
        atomic = M >= 2 * MIN_TOKENS_PER_SPLIT  # a split is possible: accumulate atomically
    dev = dy.device
    # atomics accumulate in fp32 into zeros; one split stores into the weight's dtype
    alloc = torch.zeros if atomic else torch.empty
    ds = alloc(weight.shape, dtype=torch.float32, device=dev) if want_scores else None
    dw = alloc(weight.shape, dtype=torch.float32 if atomic else weight.dtype, device=dev) if want_weight else None
    db = alloc((N,), dtype=torch.float32, device=dev) if want_bias else None
    if not (want_scores or want_weight or want_bias):
        return ds, dw, db
    dummy = torch.empty(1, dtype=torch.float32, device=dev)  # for outputs not asked for
    sms = num_sms(dy)

    def grid(meta):
        tiles = -(-N // meta["BLOCK_N"]) * -(-K // meta["BLOCK_K"])
        split = split_m if split_m is not None else choose_split_m(M, N, K, sms, meta["BLOCK_N"], meta["BLOCK_K"])
        return tiles, split

    with cuda_device_of(dy):
        launch_autotuned(
            kernels._ste_grad_kernel, grid,
            dy, x, weight, packed,
            ds if ds is not None else dummy, dw if dw is not None else dummy, db if db is not None else dummy,
            M, N, K, size_bucket(M),
            dy.stride(0), dy.stride(1), x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
            packed.stride(0), packed.stride(1),
            ds.stride(0) if ds is not None else 0, ds.stride(1) if ds is not None else 0,
            dw.stride(0) if dw is not None else 0, dw.stride(1) if dw is not None else 0,
            WRITE_DS=want_scores, WRITE_DW=want_weight, WRITE_DB=want_bias, ATOMIC=atomic,
            UPCAST=interpreting(), DOT_PRECISION=dot_precision(dy.dtype),
        )
    return ds, _as(dw, weight.dtype), db


def ste_grad_cublas(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor,
    *, want_scores: bool, want_weight: bool, want_bias: bool,
    split_m: int | None = None,
):
    """G = dy^T x on cuBLAS (fp32 output), then the Triton epilogue; same results as `ste_grad_triton`
    (split_m is accepted and ignored). Deterministic."""
    g = mm_fp32(dy.t(), x) if (want_scores or want_weight) else None
    ds, dw = ste_epilogue_triton(g, weight, packed, want_scores=want_scores, want_weight=want_weight) \
        if g is not None else (None, None)
    db = torch.sum(dy, 0, dtype=torch.float32) if want_bias else None
    return ds, dw, db


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result, accumulated in fp32. 16-bit inputs use cuBLAS's fp32-output GEMM
    (`torch.mm(..., out_dtype=torch.float32)`) where this torch build has it; elsewhere (CPU, torch
    < 2.8) the inputs are upcast to fp32 first: the same numbers, but an fp32 GEMM (TF32 only when
    torch allows it) and a copy of each input."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return torch.mm(a, b)
    if a.dtype == b.dtype and _has_fp32_out_mm(a.device.type, a.dtype):
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())


@functools.lru_cache(maxsize=None)
def _has_fp32_out_mm(device_type: str, dtype: torch.dtype) -> bool:
    if device_type != "cuda":
        return False
    try:
        probe = torch.ones((2, 2), dtype=dtype, device=device_type)
        return torch.mm(probe, probe, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


def _as(t, dtype):
    return t if t is None or t.dtype == dtype else t.to(dtype)


def ste_grad_torch(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor,
    *, want_scores: bool, want_weight: bool, want_bias: bool,
    split_m: int | None = None,
):
    """PyTorch twin of `ste_grad_triton` and `ste_grad_cublas` (split_m is accepted and ignored)."""
    g = mm_fp32(dy.t(), x) if (want_scores or want_weight) else None
    ds, dw = ste_epilogue_torch(g, weight, packed, want_scores=want_scores, want_weight=want_weight) \
        if g is not None else (None, None)
    db = torch.sum(dy, 0, dtype=torch.float32) if want_bias else None
    return ds, dw, db
