"""dy^T x with a fused straight-through epilogue: the weight-side gradients of a masked linear.

    G  = dy^T x                      [N, K], accumulated in fp32 registers, never written
    dS = G * W                       (scores, straight-through estimator)
    dW = G * M                       (weight, only when it trains)
    db = sum_m dy                    (bias; computed by the programs of the first K tile from the dy
                                      tiles they load anyway)

The reduction runs over tokens (M, large); the output has few tiles for BERT shapes (768x768 is
36 tiles of 128x128 against 132 SMs), so the M range is split across programs (split-K) and the
partial results are added atomically into zero-initialised fp32 outputs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _runtime
from ._runtime import (FMA_ACC_PER_THREAD, autotune_configs, check_triton_tensors, dot_precision, interpreting,
                       launchable_configs, num_sms, size_bucket)
from .mask_prep import mask_prep_torch


def _zero_atomic_outputs(nargs):
    # Runs before every launch of the chosen config, the autotuner's trial runs included, so split-K
    # atomics always start from zero (reset_to_zero alone would not clear the last trial's sums).
    if nargs["ATOMIC"]:
        for flag, name in (("WRITE_DS", "ds_ptr"), ("WRITE_DW", "dw_ptr"), ("WRITE_DB", "db_ptr")):
            if nargs[flag]:
                nargs[name].zero_()


def _configs():
    cfgs = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "BLOCK_M": bm}, num_warps=w, num_stages=s,
                      pre_hook=_zero_atomic_outputs)
        for bn, bk, bm, w, s in [
            (128, 128, 64, 8, 3), (128, 128, 32, 8, 4), (64, 128, 64, 4, 4),
            (128, 64, 64, 4, 4), (64, 64, 64, 4, 4),
            (64, 64, 32, 4, 4),  # the one an fp32 IEEE (FMA) dot fits on sm_80 without spilling
        ]
    ]
    if interpreting():
        cfgs.insert(0, triton.Config({"BLOCK_N": 16, "BLOCK_K": 16, "BLOCK_M": 16}, pre_hook=_zero_atomic_outputs))
    return autotune_configs(cfgs)


def _prune_configs(configs, named_args, **kwargs):
    """Drop configs that cannot run here (bench/compile_report.py checks the estimate): the pipeline
    keeps num_stages tiles of dy^T [BLOCK_N, BLOCK_M] and x [BLOCK_M, BLOCK_K] in shared memory."""
    dy, x = named_args["dy_ptr"], named_args["x_ptr"]

    def shared_bytes(c):
        k = c.kwargs
        return c.num_stages * k["BLOCK_M"] * (k["BLOCK_N"] * dy.element_size() + k["BLOCK_K"] * x.element_size())

    fma = dy.dtype == torch.float32 and kwargs.get("DOT_PRECISION") == "ieee"  # no tensor cores
    # without wgmma (sm_80) the epilogue's W and mask tiles sit in registers beside an mma.sync
    # accumulator: 64 elements per thread spilled 128-536 bytes there (bench/NOTES.md)
    small_acc = fma or not _runtime.has_wgmma(dy.device)
    if fma:  # an FMA dot also holds BLOCK_M-deep operand slices in registers: 64 spilled ~700 B on sm_80
        configs = [c for c in configs if c.kwargs["BLOCK_M"] <= 32] or configs
    return launchable_configs(configs, dy.device, shared_bytes, lambda c: c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"],
                              FMA_ACC_PER_THREAD if small_acc else None)


@triton.autotune(configs=_configs(), key=["N", "K", "M_BUCKET", "SPLIT_M", "DOT_PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_configs})
@triton.jit
def _ste_grad_kernel(
    dy_ptr, x_ptr, w_ptr, packed_ptr, ds_ptr, dw_ptr, db_ptr,
    M, N, K, M_BUCKET, SPLIT_M,
    stride_dym, stride_dyn, stride_xm, stride_xk, stride_wn, stride_wk, stride_pn, stride_pb,
    stride_dsn, stride_dsk, stride_dwn, stride_dwk,
    WRITE_DS: tl.constexpr, WRITE_DW: tl.constexpr, WRITE_DB: tl.constexpr, ATOMIC: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_tile = tl.program_id(0)
    pid_split = tl.program_id(1)
    num_k = tl.cdiv(K, BLOCK_K)
    pid_n = pid_tile // num_k
    pid_k = pid_tile % num_k
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m0 = tl.arange(0, BLOCK_M)

    # this program's share of the token range, whole BLOCK_M blocks
    blocks_per_split = tl.cdiv(tl.cdiv(M, BLOCK_M), SPLIT_M)
    m_begin = pid_split * blocks_per_split * BLOCK_M
    m_end = tl.minimum(m_begin + blocks_per_split * BLOCK_M, M)

    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(m_begin, m_end, BLOCK_M):
        offs_m = m0 + offs_m0
        m_valid = offs_m < m_end
        dy_t = tl.load(dy_ptr + offs_m[None, :] * stride_dym + offs_n[:, None] * stride_dyn,
                       mask=m_valid[None, :] & (offs_n[:, None] < N), other=0.0)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=m_valid[:, None] & (offs_k[None, :] < K), other=0.0)
        if UPCAST:  # the interpreter's bf16 dot is wrong; compute it in fp32 there
            acc += tl.dot(dy_t.to(tl.float32), x.to(tl.float32))
        else:
            acc += tl.dot(dy_t, x, input_precision=DOT_PRECISION)
        if WRITE_DB:
            db_acc += tl.sum(dy_t.to(tl.float32), axis=1)

    tile_valid = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    if WRITE_DS:
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=tile_valid, other=0.0)
        ds = acc * w.to(tl.float32)
        ds_ptrs = ds_ptr + offs_n[:, None] * stride_dsn + offs_k[None, :] * stride_dsk
        if ATOMIC:
            tl.atomic_add(ds_ptrs, ds, mask=tile_valid)
        else:
            tl.store(ds_ptrs, ds.to(ds_ptr.dtype.element_ty), mask=tile_valid)
    if WRITE_DW:
        byte = tl.load(packed_ptr + offs_n[:, None] * stride_pn + (offs_k[None, :] // 8) * stride_pb,
                       mask=tile_valid, other=0)
        keep = ((byte.to(tl.int32) >> (offs_k[None, :] % 8)) & 1) != 0
        dw = tl.where(keep, acc, 0.0)
        dw_ptrs = dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk
        if ATOMIC:
            tl.atomic_add(dw_ptrs, dw, mask=tile_valid)
        else:
            tl.store(dw_ptrs, dw.to(dw_ptr.dtype.element_ty), mask=tile_valid)
    if WRITE_DB:
        if pid_k == 0:
            if ATOMIC:
                tl.atomic_add(db_ptr + offs_n, db_acc, mask=offs_n < N)
            else:
                tl.store(db_ptr + offs_n, db_acc.to(db_ptr.dtype.element_ty), mask=offs_n < N)


def choose_split_m(M: int, N: int, K: int, sms: int, tile: int = 128, min_tokens: int = 512) -> int:
    """Split the token range until the grid covers the GPU about twice, keeping >= min_tokens per split."""
    tiles = triton.cdiv(N, tile) * triton.cdiv(K, tile)
    want = max(1, (2 * sms) // max(tiles, 1))
    return max(1, min(want, M // min_tokens))


def ste_grad_triton(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor,
    *, want_scores: bool, want_weight: bool, want_bias: bool,
    split_m: int | None = None,
):
    """Returns (dS fp32 or None, dW in weight.dtype or None, db fp32 or None) for dy [M, N], x [M, K]."""
    check_triton_tensors(dy=dy, x=x, weight=weight, packed=packed)
    M, N = dy.shape
    K = x.shape[1]
    if M == 0 or N == 0 or K == 0:  # nothing to launch; the twin handles the empty sums
        return ste_grad_torch(dy, x, weight, packed, want_scores=want_scores, want_weight=want_weight,
                              want_bias=want_bias)
    if split_m is None:
        split_m = 1 if interpreting() else choose_split_m(M, N, K, num_sms(dy))
    split_m = max(1, min(split_m, max(M, 1)))
    atomic = split_m > 1
    dev = dy.device
    # atomics accumulate in fp32 (zeroed by the config pre-hook); one split stores into weight's dtype
    ds = torch.empty(weight.shape, dtype=torch.float32, device=dev) if want_scores else None
    dw_dtype = torch.float32 if atomic else weight.dtype
    dw = torch.empty(weight.shape, dtype=dw_dtype, device=dev) if want_weight else None
    db = torch.empty((N,), dtype=torch.float32, device=dev) if want_bias else None
    if not (want_scores or want_weight or want_bias):
        return ds, dw, db
    dummy = torch.empty(1, dtype=torch.float32, device=dev)  # for outputs not asked for
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]) * triton.cdiv(K, meta["BLOCK_K"]), split_m)
    _ste_grad_kernel[grid](
        dy, x, weight, packed,
        ds if ds is not None else dummy, dw if dw is not None else dummy, db if db is not None else dummy,
        M, N, K, size_bucket(M), split_m,
        dy.stride(0), dy.stride(1), x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
        packed.stride(0), packed.stride(1),
        ds.stride(0) if ds is not None else 0, ds.stride(1) if ds is not None else 0,
        dw.stride(0) if dw is not None else 0, dw.stride(1) if dw is not None else 0,
        WRITE_DS=want_scores, WRITE_DW=want_weight, WRITE_DB=want_bias, ATOMIC=atomic,
        UPCAST=interpreting(), DOT_PRECISION=dot_precision(dy.dtype),
    )
    return ds, _as(dw, weight.dtype), db


def _as(t, dtype):
    return t if t is None or t.dtype == dtype else t.to(dtype)


def ste_grad_torch(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor,
    *, want_scores: bool, want_weight: bool, want_bias: bool,
    split_m: int | None = None,
):
    """PyTorch twin of `ste_grad_triton` (split_m is accepted and ignored)."""
    g = dy.t().float() @ x.float() if (want_scores or want_weight) else None
    ds = g * weight.float() if want_scores else None
    dw = None
    if want_weight:
        _, _, keep = mask_prep_torch(None, mask=packed, shape=tuple(weight.shape), want_dense=False,
                                     want_packed=False, want_bool=True)
        dw = torch.where(keep, g, 0).to(weight.dtype)
    db = dy.float().sum(0) if want_bias else None
    return ds, dw, db
