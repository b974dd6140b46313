"""Triton kernel of mask_prep.py (the launcher and its PyTorch twin live there; this module is
imported only when a Triton backend runs, so the twins work without triton)."""
import triton
import triton.language as tl


@triton.jit
def _mask_prep_kernel(
    src_ptr, w_ptr, dense_ptr, packed_ptr, bool_ptr,
    threshold, threshold_ptr, N, K,
    stride_sn, stride_sk, stride_wn, stride_wk, stride_dn, stride_dk, stride_pn, stride_bn,
    SOURCE: tl.constexpr, THRESHOLD_FROM_PTR: tl.constexpr,
    WRITE_DENSE: tl.constexpr, WRITE_PACKED: tl.constexpr, WRITE_BOOL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    num_bytes = (K + 7) // 8
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    bits = tl.arange(0, 8)
    # a [BLOCK_N, BLOCK_B, 8] tile: byte b of row n covers columns 8b .. 8b+7
    n3 = offs_n[:, None, None]
    col3 = offs_b[None, :, None] * 8 + bits[None, None, :]
    valid = (n3 < N) & (col3 < K)
    byte_valid = (offs_n[:, None] < N) & (offs_b[None, :] < num_bytes)

    if SOURCE == 0:
        if THRESHOLD_FROM_PTR:  # a device-resident threshold: read here, so the host never waits for it
            tau = tl.load(threshold_ptr).to(tl.float32)
        else:
            tau = threshold
        s = tl.load(src_ptr + n3 * stride_sn + col3 * stride_sk, mask=valid, other=0.0)
        keep = (s > tau) & valid  # strict; NaN compares false, so NaN scores are pruned
    elif SOURCE == 1:
        m = tl.load(src_ptr + n3 * stride_sn + col3 * stride_sk, mask=valid, other=0)
        keep = (m != 0) & valid
    else:
        byte = tl.load(src_ptr + offs_n[:, None] * stride_sn + offs_b[None, :] * stride_sk, mask=byte_valid, other=0)
        keep = (((byte.to(tl.int32)[:, :, None] >> bits[None, None, :]) & 1) != 0) & valid

    if WRITE_DENSE:
        w = tl.load(w_ptr + n3 * stride_wn + col3 * stride_wk, mask=valid, other=0.0)
        wm = tl.where(keep, w, 0.0)
        tl.store(dense_ptr + n3 * stride_dn + col3 * stride_dk, wm.to(dense_ptr.dtype.element_ty), mask=valid)
    if WRITE_PACKED:
        byte_out = tl.sum(keep.to(tl.int32) << bits[None, None, :], axis=2)
        tl.store(packed_ptr + offs_n[:, None] * stride_pn + offs_b[None, :], byte_out.to(tl.uint8), mask=byte_valid)
    if WRITE_BOOL:
        tl.store(bool_ptr + n3 * stride_bn + col3, keep.to(tl.uint8), mask=valid)
