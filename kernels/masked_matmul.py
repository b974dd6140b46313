"""Masked GEMM that applies a bit-packed mask while loading W (forward and dx).

    forward (transpose_weight=False): out[m, n] = sum_k a[m, k] * (W*M)[n, k] + bias[n]
    dx      (transpose_weight=True):  out[m, k] = sum_n a[m, n] * (W*M)[n, k]

Each program computes a transposed tile out^T[j, m] = (W*M)[j, :] @ a^T[:, m]: the masked weight
is the left operand of the dot because it is transformed in registers after loading, which is
where Hopper's wgmma wants a register operand (DESIGN.md, kernel plan).
"""
from __future__ import annotations

import torch

from ._runtime import (check_int32_offsets, check_triton_tensors, cuda_device_of, dot_precision, interpreting,
                       launch_autotuned, require_triton, size_bucket)
from .mask_prep import mask_prep_torch


def masked_matmul_triton(
    a: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None,
    *, transpose_weight: bool = False,
) -> torch.Tensor:
    """a [M, R] @ op(W*M) with the packed mask applied on load; output in a.dtype.

    transpose_weight=False: R = K, output [M, N] (forward). True: R = N, output [M, K] (dx).
    W may have another dtype than `a` (fp32 master weights under autocast): it is cast after masking.
    """
    require_triton()
    from . import masked_matmul_kernel as kernels  # looked up per launch, so tools can swap the kernel

    check_triton_tensors(a=a, weight=weight, packed=packed, bias=bias)
    check_int32_offsets("masked_matmul", a=a, weight=weight)
    N, K = weight.shape
    M, R = a.shape
    J = K if transpose_weight else N
    if M == 0 or J == 0 or R == 0:  # nothing to launch; the twin handles the empty sums
        return masked_matmul_torch(a, weight, packed, bias, transpose_weight=transpose_weight)
    out = torch.empty((M, J), dtype=a.dtype, device=a.device)
    check_int32_offsets("masked_matmul", out=out)
    if transpose_weight:  # out^T[k, m] = sum_n W[n, k] a[m, n]
        stride_wj, stride_wr = weight.stride(1), weight.stride(0)
    else:
        stride_wj, stride_wr = weight.stride(0), weight.stride(1)
    grid = lambda meta: (-(-J // meta["BLOCK_J"]) * -(-M // meta["BLOCK_M"]),)
    with cuda_device_of(a):
        launch_autotuned(
            kernels._masked_matmul_kernel, grid,
            a, weight, packed, bias if bias is not None else out, out,
            M, J, R, size_bucket(M),
            bias.stride(0) if bias is not None else 0,
            a.stride(0), a.stride(1), stride_wj, stride_wr, packed.stride(0), packed.stride(1),
            out.stride(0), out.stride(1),
            TRANSPOSE_W=transpose_weight, HAS_BIAS=bias is not None,
            UPCAST=interpreting(), DOT_PRECISION=dot_precision(a.dtype),
        )
    return out


def masked_matmul_torch(
    a: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None,
    *, transpose_weight: bool = False,
) -> torch.Tensor:
    """PyTorch twin of `masked_matmul_triton`."""
    dense, _, _ = mask_prep_torch(weight, mask=packed, dense_dtype=a.dtype, want_packed=False)
    if transpose_weight:
        return a @ dense
    return torch.nn.functional.linear(a, dense, None if bias is None else bias.to(a.dtype))
