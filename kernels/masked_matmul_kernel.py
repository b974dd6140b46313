"""Triton kernel of masked_matmul.py, with its autotune configs (the launcher and its PyTorch twin
live there; this module is imported only when a Triton backend runs)."""
import torch
import triton
import triton.language as tl

from . import _runtime
from ._runtime import FMA_ACC_PER_THREAD, autotune_configs, interpreting, launchable_configs


def _configs():
    cfgs = []
    for bj, bm, br, warps, stages in [
        (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
        (128, 256, 64, 8, 3), (64, 64, 64, 4, 4), (128, 128, 32, 4, 4),
        (64, 64, 32, 4, 4),  # the one an fp32 IEEE (FMA) dot fits on sm_80 without spilling
    ]:
        cfgs.append(triton.Config({"BLOCK_J": bj, "BLOCK_M": bm, "BLOCK_R": br, "GROUP_J": 8},
                                  num_warps=warps, num_stages=stages))
    if interpreting():
        # small tiles keep the interpreter fast and exercise the edge masks on small test shapes
        cfgs.insert(0, triton.Config({"BLOCK_J": 16, "BLOCK_M": 16, "BLOCK_R": 16, "GROUP_J": 2}))
    return autotune_configs(cfgs)


def _prune_configs(configs, named_args, **kwargs):
    """Drop configs that cannot run here (bench/compile_report.py checks the estimate): the pipeline
    keeps num_stages tiles of W [BLOCK_J, BLOCK_R] and a [BLOCK_M, BLOCK_R] in shared memory."""
    a, w = named_args["a_ptr"], named_args["w_ptr"]

    def shared_bytes(c):
        k = c.kwargs
        return c.num_stages * k["BLOCK_R"] * (k["BLOCK_J"] * w.element_size() + k["BLOCK_M"] * a.element_size())

    fma = a.dtype == torch.float32 and kwargs.get("DOT_PRECISION") == "ieee"  # no tensor cores
    if fma:  # an FMA dot also holds BLOCK_R-deep operand slices in registers: 64 spilled ~250 B on sm_80
        configs = [c for c in configs if c.kwargs["BLOCK_R"] <= 32] or configs
    # without wgmma (sm_80) a 128x256 mma.sync tile (128 accumulators per thread) spilled 168 B
    acc_limit = FMA_ACC_PER_THREAD if fma else (None if _runtime.has_wgmma(a.device) else 64)
    return launchable_configs(configs, a.device, shared_bytes, lambda c: c.kwargs["BLOCK_J"] * c.kwargs["BLOCK_M"],
                              acc_limit)


@triton.autotune(configs=_configs(), key=["J", "R", "M_BUCKET", "TRANSPOSE_W", "DOT_PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_configs})
@triton.jit
def _masked_matmul_kernel(
    a_ptr, w_ptr, packed_ptr, bias_ptr, out_ptr,
    M, J, R, M_BUCKET,
    stride_bias, stride_am, stride_ar, stride_wj, stride_wr, stride_pn, stride_pb, stride_om, stride_oj,
    TRANSPOSE_W: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_J: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, GROUP_J: tl.constexpr,
):
    # grouped ordering: programs that run together share W tiles in L2
    pid = tl.program_id(0)
    num_j = tl.cdiv(J, BLOCK_J)
    num_m = tl.cdiv(M, BLOCK_M)
    group_size = GROUP_J * num_m
    first_j = (pid // group_size) * GROUP_J
    rows_in_group = tl.minimum(num_j - first_j, GROUP_J)
    pid_j = first_j + (pid % group_size) % rows_in_group
    pid_m = (pid % group_size) // rows_in_group

    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r0 = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_J, BLOCK_M), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        offs_r = r0 + offs_r0
        w_valid = (offs_j[:, None] < J) & (offs_r[None, :] < R)
        w = tl.load(w_ptr + offs_j[:, None] * stride_wj + offs_r[None, :] * stride_wr, mask=w_valid, other=0.0)
        # mask bit of W[n, k] lives in byte [n, k // 8], bit k % 8; n/k are (j, r) or (r, j)
        if TRANSPOSE_W:
            byte = tl.load(packed_ptr + offs_r[None, :] * stride_pn + (offs_j[:, None] // 8) * stride_pb,
                           mask=w_valid, other=0)
            bit = offs_j[:, None] % 8
        else:
            byte = tl.load(packed_ptr + offs_j[:, None] * stride_pn + (offs_r[None, :] // 8) * stride_pb,
                           mask=w_valid, other=0)
            bit = offs_r[None, :] % 8
        keep = ((byte.to(tl.int32) >> bit) & 1) != 0
        a = tl.load(a_ptr + offs_m[None, :] * stride_am + offs_r[:, None] * stride_ar,
                    mask=(offs_m[None, :] < M) & (offs_r[:, None] < R), other=0.0)
        w = tl.where(keep, w, 0.0).to(a.dtype)
        if UPCAST:  # the interpreter's bf16 dot is wrong; compute it in fp32 there
            acc += tl.dot(w.to(tl.float32), a.to(tl.float32))
        else:
            acc += tl.dot(w, a, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_j * stride_bias, mask=offs_j < J, other=0.0).to(tl.float32)[:, None]
    out_mask = (offs_j[:, None] < J) & (offs_m[None, :] < M)
    tl.store(out_ptr + offs_m[None, :] * stride_om + offs_j[:, None] * stride_oj,
             acc.to(out_ptr.dtype.element_ty), mask=out_mask)
