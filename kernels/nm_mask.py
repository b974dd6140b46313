"""N:M semi-structured masks: keep the n largest of every m consecutive elements along the last dim.

For a weight [N, K] the groups run along the input dimension K (2:4 is what sparse tensor cores
accelerate). Ties inside a group: the lower index wins, as in topk.py; -0.0 equals +0.0; NaN is an
error. For magnitude pruning pass `weight.abs()`.
"""
from __future__ import annotations

import torch

from ._runtime import check_triton_tensors, cuda_device_of, require_triton, resolve_backend
from .topk import SUPPORTED_DTYPES, float_to_key


def nm_mask_triton(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    require_triton()
    from . import nm_mask_kernel as kernels  # looked up per launch, so tools can swap the kernel

    check_triton_tensors(scores=scores)
    flat = scores.detach().to(torch.float32).contiguous()
    out = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
    num_groups = flat.numel() // m
    if num_groups == 0:
        return out
    m_pow2 = 1 << (m - 1).bit_length()
    block_g = max(1, 1024 // (m_pow2 * m_pow2))  # the rank tile is BLOCK_G x M x M
    with cuda_device_of(flat):
        kernels._nm_mask_kernel[(-(-num_groups // block_g),)](
            flat, out.view(torch.uint8), num_groups, N=n, M=m, M_POW2=m_pow2, BLOCK_G=block_g,
        )
    return out


def nm_mask_torch(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """PyTorch twin of `nm_mask_triton`."""
    groups = float_to_key(scores.detach()).reshape(-1, m).to(torch.int64)
    out = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    if n and groups.numel():
        index = torch.arange(m, dtype=torch.int64, device=scores.device)
        composite = groups * 2**32 + (2**32 - 1 - index)  # unique: equal keys ordered by index
        out.scatter_(1, torch.topk(composite, n, dim=1).indices, True)
    return out.reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4, *, backend: str = "auto") -> torch.Tensor:
    """Bool mask keeping the `n` largest of each group of `m` consecutive elements of the last dim."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"scores must be a float32, float16, bfloat16 or float64 tensor, got {scores.dtype}")
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= m <= 32 or not 0 <= n <= m:
        raise ValueError(f"need 0 <= n <= m and 1 <= m <= 32, got n={n}, m={m}")
    if scores.dim() == 0 or scores.shape[-1] % m:
        raise ValueError(f"scores' last dimension must be a multiple of m={m}, got shape {tuple(scores.shape)}")
    nans = int(torch.isnan(scores).sum())
    if nans:
        raise ValueError(f"scores contains {nans} NaN values; scores must not be NaN")
    if resolve_backend(backend, scores.device) == "triton":
        return nm_mask_triton(scores, n, m)
    return nm_mask_torch(scores, n, m)
