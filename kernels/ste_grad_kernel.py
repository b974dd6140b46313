"""Triton kernel of ste_grad.py, with its autotune configs (the launcher and its PyTorch twin live
there; this module is imported only when a Triton backend runs)."""
import torch
import triton
import triton.language as tl

from . import _runtime
from ._runtime import FMA_ACC_PER_THREAD, autotune_configs, interpreting, launchable_configs


def _configs():
    cfgs = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "BLOCK_M": bm}, num_warps=w, num_stages=s)
        for bn, bk, bm, w, s in [
            (128, 128, 64, 8, 3), (128, 128, 32, 8, 4), (64, 128, 64, 4, 4),
            (128, 64, 64, 4, 4), (64, 64, 64, 4, 4),
            (64, 64, 32, 4, 4),  # the one an fp32 IEEE (FMA) dot fits on sm_80 without spilling
        ]
    ]
    if interpreting():
        cfgs.insert(0, triton.Config({"BLOCK_N": 16, "BLOCK_K": 16, "BLOCK_M": 16}))
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


# split-K outputs are zeroed by the launcher (torch.zeros); reset_to_zero only clears the autotuner's
# trial sums (it zeroes before each trial and once after tuning, before the real launch)
@triton.autotune(configs=_configs(), key=["N", "K", "M_BUCKET", "ATOMIC", "DOT_PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_configs},
                 reset_to_zero=["ds_ptr", "dw_ptr", "db_ptr"])
@triton.jit
def _ste_grad_kernel(
    dy_ptr, x_ptr, w_ptr, packed_ptr, ds_ptr, dw_ptr, db_ptr,
    M, N, K, M_BUCKET,
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

    # this program's share of the token range, whole BLOCK_M blocks; the launcher sizes the split
    # (the grid's second axis) from the tile the autotuner chose
    blocks_per_split = tl.cdiv(tl.cdiv(M, BLOCK_M), tl.num_programs(1))
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
            tl.atomic_add(ds_ptrs, ds, mask=tile_valid, sem="relaxed")
        else:
            tl.store(ds_ptrs, ds.to(ds_ptr.dtype.element_ty), mask=tile_valid)
    if WRITE_DW:
        byte = tl.load(packed_ptr + offs_n[:, None] * stride_pn + (offs_k[None, :] // 8) * stride_pb,
                       mask=tile_valid, other=0)
        keep = ((byte.to(tl.int32) >> (offs_k[None, :] % 8)) & 1) != 0
        dw = tl.where(keep, acc, 0.0)
        dw_ptrs = dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk
        if ATOMIC:
            tl.atomic_add(dw_ptrs, dw, mask=tile_valid, sem="relaxed")
        else:
            tl.store(dw_ptrs, dw.to(dw_ptr.dtype.element_ty), mask=tile_valid)
    if WRITE_DB:
        if pid_k == 0:
            if ATOMIC:
                tl.atomic_add(db_ptr + offs_n, db_acc, mask=offs_n < N, sem="relaxed")
            else:
                tl.store(db_ptr + offs_n, db_acc.to(db_ptr.dtype.element_ty), mask=offs_n < N)
