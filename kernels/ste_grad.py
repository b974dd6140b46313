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

from ._runtime import check_triton_tensors, dot_precision, interpreting, num_sms, require_triton, size_bucket
from .mask_prep import mask_prep_torch


def choose_split_m(M: int, N: int, K: int, sms: int, tile: int = 128, min_tokens: int = 512) -> int:
    """Split the token range until the grid covers the GPU about twice, keeping >= min_tokens per split."""
    tiles = -(-N // tile) * -(-K // tile)
    want = max(1, (2 * sms) // max(tiles, 1))
    return max(1, min(want, M // min_tokens))


def ste_grad_triton(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor,
    *, want_scores: bool, want_weight: bool, want_bias: bool,
    split_m: int | None = None,
):
    """Returns (dS fp32 or None, dW in weight.dtype or None, db fp32 or None) for dy [M, N], x [M, K]."""
    require_triton()
    from . import ste_grad_kernel as kernels  # looked up per launch, so tools can swap the kernel

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
    grid = lambda meta: (-(-N // meta["BLOCK_N"]) * -(-K // meta["BLOCK_K"]), split_m)
    kernels._ste_grad_kernel[grid](
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
