"""Triton kernel of ste_epilogue.py (the launcher and its PyTorch twin live there; this module is
imported only when a Triton backend runs)."""
import triton
import triton.language as tl


@triton.jit
def _ste_epilogue_kernel(
    g_ptr, w_ptr, packed_ptr, ds_ptr, dw_ptr, N, K,
    stride_gn, stride_gk, stride_wn, stride_wk, stride_pn, stride_pb, stride_dsn, stride_dsk, stride_dwn, stride_dwk,
    WRITE_DS: tl.constexpr, WRITE_DW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # one elementwise pass over G = dy^T x: dS = G * W, dW = G * M; nothing accumulates, so two runs
    # give the same bits
    offs_n = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    valid = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    g = tl.load(g_ptr + offs_n[:, None] * stride_gn + offs_k[None, :] * stride_gk, mask=valid, other=0.0)
    if WRITE_DS:
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=valid, other=0.0)
        tl.store(ds_ptr + offs_n[:, None] * stride_dsn + offs_k[None, :] * stride_dsk, g * w.to(tl.float32),
                 mask=valid)
    if WRITE_DW:
        byte = tl.load(packed_ptr + offs_n[:, None] * stride_pn + (offs_k[None, :] // 8) * stride_pb,
                       mask=valid, other=0)
        keep = ((byte.to(tl.int32) >> (offs_k[None, :] % 8)) & 1) != 0
        dw = tl.where(keep, g, 0.0)
        tl.store(dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk,
                 dw.to(dw_ptr.dtype.element_ty), mask=valid)
