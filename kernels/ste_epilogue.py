"""The straight-through epilogue on a precomputed G = dy^T x (fp32 [N, K]): one elementwise pass

    dS = G * W          (scores)
    dW = G * M          (weight, in the weight's dtype; M from the bit-packed mask)

With G from cuBLAS (ste_grad.ste_grad_cublas) this is the default weight-side backward: no
atomics, so the results are bitwise reproducible run to run.
"""
from __future__ import annotations

import torch

from ._runtime import check_triton_tensors, cuda_device_of, require_triton
from .mask_prep import mask_prep_torch

BLOCK_N, BLOCK_K = 32, 128


def ste_epilogue_triton(g: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, *, want_scores: bool,
                        want_weight: bool):
    """Returns (dS fp32 or None, dW in weight.dtype or None)."""
    require_triton()
    from . import ste_epilogue_kernel as kernels  # looked up per launch, so tools can swap the kernel

    check_triton_tensors(g=g, weight=weight, packed=packed)
    N, K = weight.shape
    ds = torch.empty((N, K), dtype=torch.float32, device=g.device) if want_scores else None
    dw = torch.empty((N, K), dtype=weight.dtype, device=g.device) if want_weight else None
    if N == 0 or K == 0 or not (want_scores or want_weight):
        return ds, dw
    d, w_ = (ds if ds is not None else g), (dw if dw is not None else g)  # unused pointers still need a tensor
    with cuda_device_of(g):
        kernels._ste_epilogue_kernel[(-(-N // BLOCK_N), -(-K // BLOCK_K))](
            g, weight, packed, d, w_, N, K,
            g.stride(0), g.stride(1), weight.stride(0), weight.stride(1), packed.stride(0), packed.stride(1),
            d.stride(0), d.stride(1), w_.stride(0), w_.stride(1),
            WRITE_DS=want_scores, WRITE_DW=want_weight, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
        )
    return ds, dw


def ste_epilogue_torch(g: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, *, want_scores: bool,
                       want_weight: bool):
    """PyTorch twin of `ste_epilogue_triton` (the mask may also be bool [N, K])."""
    ds = g * weight.float() if want_scores else None
    dw = None
    if want_weight:
        _, _, keep = mask_prep_torch(None, mask=packed, shape=tuple(weight.shape), want_dense=False,
                                     want_packed=False, want_bool=True)
        dw = torch.where(keep, g, 0).to(weight.dtype)
    return ds, dw
