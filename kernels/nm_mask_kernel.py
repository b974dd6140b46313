"""Triton kernel of nm_mask.py (the launcher and its PyTorch twin live there; this module is
imported only when a Triton backend runs)."""
import triton
import triton.language as tl

from .topk_radix import _ordered_key


@triton.jit
def _nm_mask_kernel(
    scores_ptr, out_ptr, num_groups,
    N: tl.constexpr, M: tl.constexpr, M_POW2: tl.constexpr, BLOCK_G: tl.constexpr,
):
    groups = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    cols = tl.arange(0, M_POW2)
    valid = (groups[:, None] < num_groups) & (cols[None, :] < M)
    offs = groups[:, None].to(tl.int64) * M + cols[None, :]
    key = _ordered_key(tl.load(scores_ptr + offs, mask=valid, other=0.0))
    # rank[g, i] = how many group members j beat member i (larger key, or equal key and j < i)
    key_i = key[:, :, None]
    key_j = key[:, None, :]
    earlier = cols[None, None, :] < cols[None, :, None]
    beats = ((key_j > key_i) | ((key_j == key_i) & earlier)) & valid[:, None, :]
    rank = tl.sum(beats.to(tl.int32), axis=2)
    tl.store(out_ptr + offs, (valid & (rank < N)).to(tl.uint8), mask=valid)
