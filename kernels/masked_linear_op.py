"""masked_linear as registered torch.library ops (namespace `maskedbert`), with fake (meta)
implementations and registered autograd, so `torch.compile` sees one node per layer and traces
through it with fullgraph=True, and a training step can be captured in a CUDA graph (the launchers
read no device value on the host). Eager calls take `MaskedLinearFunction`, an autograd.Function over
the same math (_forward_math/_backward_math) with its launches prepared once per argument layout
(`MaskedLinearPath`): the ops' Python dispatch layers cost tens of microseconds per call
(bench/host_overhead.py), which eager mode need not pay.

    maskedbert::masked_linear_fwd(x [M, K], weight, bias?, scores?, mask?, threshold_tensor?,
                                  threshold, path, keep_masked_weight) -> (y, mask_for_backward, masked_weight)
    maskedbert::masked_linear_bwd(dy, x?, weight, mask, masked_weight?, path, ste, need_x, need_weight,
                                  need_bias, need_scores) -> (dx, dweight, dbias (fp32), dscores)

Outputs a call does not produce are empty tensors (an op cannot return None). Arguments are
checked by the callers (masked_linear.py, once per argument layout), not here.

`path`: "torch" (PyTorch twins), "triton_dense" (prep kernel writes W*M, cuBLAS GEMMs) or
"triton_fused" (a Triton GEMM applies the packed mask while loading W). `ste`: "cublas" or
"triton", how the Triton paths compute dS/dW (ste_grad.py). `keep_masked_weight`: return W*M from
the forward (dense paths) so the backward's dx GEMM reuses it instead of preparing it again.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .dispatch import choose_ste
from .mask_prep import MaskPrepLaunch, mask_prep_torch, mask_prep_triton, packed_cols
from .masked_matmul import masked_matmul_triton
from .ste_epilogue import SteEpilogueLaunch, ste_epilogue_triton
from .ste_grad import mm_fp32, ste_grad_torch, ste_grad_triton

PATHS = ("torch", "triton_dense", "triton_fused")
STE_IMPLS = ("cublas", "triton")
_PREP = {"torch": mask_prep_torch, "triton_dense": mask_prep_triton, "triton_fused": mask_prep_triton}


def _backward_reads_input_mask(mask: Optional[torch.Tensor], path: str) -> bool:
    """The backward uses the caller's mask as given: the torch path reads bool or packed masks, the
    Triton paths packed ones (a bool mask is packed once by the forward)."""
    return mask is not None and (path == "torch" or mask.dtype == torch.uint8)


def _empty(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((0,), dtype=dtype, device=like.device)


def _no_autocast(device_type: str):
    """Autocast off (the caller chose the dtypes), at no cost when it is off already."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _forward_prep(path: str, weight, scores, mask, threshold, dense_dtype) -> Optional[MaskPrepLaunch]:
    """The forward's Triton prep launch for these arguments (None on the torch path, and on the fused
    path with a packed mask, which the GEMM reads as given)."""
    if path == "torch":
        return None
    fused = path == "triton_fused"
    if _backward_reads_input_mask(mask, path):
        return None if fused else MaskPrepLaunch(weight, mask=mask, dense_dtype=dense_dtype, want_packed=False)
    return MaskPrepLaunch(weight, scores=scores, mask=mask, threshold=threshold, dense_dtype=dense_dtype,
                          want_dense=not fused)


def forward_impl(x, weight, bias, scores, mask, threshold_tensor, threshold: float, path: str,
                 keep_masked_weight: bool):
    """(y, mask for the backward or None when it reads the input mask, W*M or None)."""
    tau = threshold_tensor if threshold_tensor is not None else threshold
    with _no_autocast(x.device.type):
        return _forward_math(x, weight, bias, scores, mask, tau, path, keep_masked_weight,
                             _forward_prep(path, weight, scores, mask, tau, x.dtype))


def _forward_math(x, weight, bias, scores, mask, threshold, path: str, keep_masked_weight: bool,
                  prep: Optional[MaskPrepLaunch]):
    """forward_impl with the prep launch given (autocast already off); x is [M, K]. The mask
    returned is the one `prep` packed (None when it packs none or the backward reads the input mask)."""
    if bias is not None and bias.dtype != x.dtype:
        bias_x = bias.to(x.dtype)
    else:
        bias_x = bias
    if path == "triton_dense":
        if _backward_reads_input_mask(mask, path):
            dense, mask_out = prep(weight, mask, threshold)[0], None
        else:
            dense, mask_out, _ = prep(weight, mask if scores is None else scores, threshold)
        return F.linear(x, dense, bias_x), mask_out, (dense if keep_masked_weight else None)
    if path == "triton_fused":  # the GEMM reads the packed mask (and the bias in its own dtype)
        if _backward_reads_input_mask(mask, path):
            mask_out, gemm_mask = None, mask
        else:
            mask_out = gemm_mask = prep(weight, mask if scores is None else scores, threshold)[1]
        return masked_matmul_triton(x, weight, gemm_mask, bias), mask_out, None
    prep_torch = _PREP["torch"]
    if mask is not None:  # the backward reads the input mask
        mask_out = None
        dense = prep_torch(weight, mask=mask, dense_dtype=x.dtype, want_packed=False)[0]
    else:  # the twin keeps a bool mask: packing bits costs more than it saves on CPU
        dense, _, mask_out = prep_torch(weight, scores=scores, threshold=threshold, dense_dtype=x.dtype,
                                        want_packed=False, want_bool=True)
    return F.linear(x, dense, bias_x), mask_out, (dense if keep_masked_weight else None)


def backward_impl(dy, x, weight, mask, masked_weight, path: str, ste: str, need_x: bool, need_weight: bool,
                  need_bias: bool, need_scores: bool):
    """(dx, dweight, dbias in fp32, dscores), None where not needed."""
    with _no_autocast(dy.device.type):  # our dtypes decide the math, whatever the caller's state
        return _backward_math(dy, x, weight, mask, masked_weight, path, ste, need_x, need_weight, need_bias,
                              need_scores, None)


def _backward_math(dy, x, weight, mask, masked_weight, path: str, ste: str, need_x: bool, need_weight: bool,
                   need_bias: bool, need_scores: bool, epilogue: Optional[SteEpilogueLaunch]):
    """backward_impl with the STE epilogue launch given (None: prepared here); autocast already off."""
    dx = dw = db = ds = None
    if need_x:
        if path == "triton_fused":
            dx = masked_matmul_triton(dy, weight, mask, None, transpose_weight=True)
        else:
            if masked_weight is None or masked_weight.numel() != weight.numel():
                masked_weight = _PREP[path](weight, mask=mask, dense_dtype=dy.dtype, want_packed=False)[0]
            dx = torch.mm(dy, masked_weight)
    if need_weight or need_scores:
        if path == "torch":
            ds, dw, db = ste_grad_torch(dy, x, weight, mask, want_scores=need_scores, want_weight=need_weight,
                                        want_bias=need_bias)
            return dx, dw, db, ds
        if ste == "cublas":  # ste_grad_cublas, with the epilogue launch prepared once per layout
            g = mm_fp32(dy.t(), x)
            if epilogue is None:
                ds, dw = ste_epilogue_triton(g, weight, mask, want_scores=need_scores, want_weight=need_weight)
            else:
                ds, dw = epilogue(g, weight, mask, need_scores, need_weight)
        else:
            ds, dw, db = ste_grad_triton(dy, x, weight, mask, want_scores=need_scores, want_weight=need_weight,
                                         want_bias=need_bias)
            return dx, dw, db, ds
    if need_bias:
        db = torch.sum(dy, 0, dtype=torch.float32)
    return dx, dw, db, ds


class MaskedLinearPath:
    """One path of the op ("torch", "triton_dense", "triton_fused") prepared for one layout of the
    weight, the mask source and the threshold in one compute dtype: the Triton launches' constant
    arguments are worked out once (MaskPrepLaunch, SteEpilogueLaunch). Its callers pass tensors of
    that layout (masked_linear.MaskedLinearPlan keys on it)."""

    __slots__ = ("path", "N", "K", "device_type", "keep_masked_weight", "reads_input_mask", "prep",
                 "prep_dense_only", "epilogue")

    def __init__(self, path: str, weight, scores, mask, threshold, compute_dtype: torch.dtype,
                 keep_masked_weight: bool = True):
        self.path = path
        self.N, self.K = weight.shape
        self.device_type = weight.device.type
        self.keep_masked_weight = keep_masked_weight
        self.reads_input_mask = _backward_reads_input_mask(mask, path)
        self.prep = _forward_prep(path, weight, scores, mask, threshold, compute_dtype)
        # W*M without the packed mask, for a forward whose backward reads no mask
        self.prep_dense_only = self.prep
        if path == "triton_dense" and not self.reads_input_mask:
            self.prep_dense_only = MaskPrepLaunch(weight, scores=scores, mask=mask, threshold=threshold,
                                                  dense_dtype=compute_dtype, want_packed=False)
        self.epilogue = None if path == "torch" else SteEpilogueLaunch(weight)

    def inference(self, x, weight, bias, scores, mask, threshold):
        """The forward alone, x [..., K] (no graph is recorded: grad mode is off)."""
        x2 = x if x.dim() == 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
        y = _forward_math(x2, weight, bias, scores, mask, threshold, self.path, False, self.prep_dense_only)[0]
        return y if x2 is x else y.view(*x.shape[:-1], y.shape[1])


class MaskedLinearFunction(torch.autograd.Function):
    """The eager path: the same forward/backward math as the registered ops, without their Python
    dispatch layers (tens of us per call, measured by bench/host_overhead.py), over a MaskedLinearPath
    prepared once per argument layout. x may have any leading dimensions: it is flattened here, not
    by an autograd view, so no extra graph nodes run. The STE implementation is chosen in the
    forward; the packed mask is written only when the backward will read it (dW, a dx without the
    kept W*M, or the Triton STE GEMM). torch.compile uses the ops."""

    @staticmethod
    def forward(ctx, x, weight, bias, scores, mask, threshold, path: MaskedLinearPath):
        need_x, need_w, _, need_s = ctx.needs_input_grad[:4]
        x2 = x if x.dim() == 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # not -1: K may be 0
        keep = need_x and path.keep_masked_weight
        ste = "cublas"
        prep = path.prep
        if path.epilogue is not None:  # a Triton path
            if need_w or need_s:
                ste = choose_ste(x2.shape[0], path.N, path.K, x2.dtype)
            if not need_w and ste == "cublas" and (keep or not need_x):
                prep = path.prep_dense_only
        if prep is path.prep_dense_only and path.path == "triton_dense":
            # mask training's step (W frozen, dx from the kept W*M): _forward_math's dense branch, inline
            dense = prep.dense(weight, mask if scores is None else scores, threshold)
            y = F.linear(x2, dense, bias if bias is None or bias.dtype == x2.dtype else bias.to(x2.dtype))
            mask_out, kept = None, (dense if keep else None)
        else:
            y, mask_out, kept = _forward_math(x2, weight, bias, scores, mask, threshold, path.path, keep, prep)
        ctx.save_for_backward(x if (need_w or need_s) else None, weight, mask if path.reads_input_mask else None)
        ctx.state = (path, mask_out, kept, ste, None if bias is None else bias.dtype)
        return y if x2 is x else y.view(*x.shape[:-1], y.shape[1])

    @staticmethod
    def backward(ctx, dy):
        x, weight, input_mask = ctx.saved_tensors
        path, mask_out, kept, ste, bias_dtype = ctx.state
        need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        lead = None
        if dy.dim() != 2:
            lead = dy.shape[:-1]
            dy = dy.reshape(math.prod(lead), dy.shape[-1])
            if x is not None:
                x = x.reshape(dy.shape[0], x.shape[-1])
        if torch.is_autocast_enabled(path.device_type):  # our dtypes decide the math
            with torch.autocast(path.device_type, enabled=False):
                dx, dw, db, ds = _backward_math(dy, x, weight, mask_out if input_mask is None else input_mask, kept,
                                                path.path, ste, need_x, need_w, need_b, need_s, path.epilogue)
        elif (not need_w and ste == "cublas" and path.epilogue is not None and path.path == "triton_dense"
              and (kept is not None or not need_x)):
            # mask training's step: _backward_math's dense + cuBLAS-STE branches, inline
            dw = None
            dx = torch.mm(dy, kept) if need_x else None
            ds = path.epilogue.scores_grad(mm_fp32(dy.t(), x), weight) if need_s else None
            db = torch.sum(dy, 0, dtype=torch.float32) if need_b else None
        else:
            dx, dw, db, ds = _backward_math(dy, x, weight, mask_out if input_mask is None else input_mask, kept,
                                            path.path, ste, need_x, need_w, need_b, need_s, path.epilogue)
        if lead is not None and dx is not None:
            dx = dx.view(*lead, dx.shape[1])
        if db is not None and db.dtype != bias_dtype:
            db = db.to(bias_dtype)
        return dx, dw, db, ds, None, None, None


def _ste_for(path: str, dy: torch.Tensor, weight: torch.Tensor) -> str:
    return choose_ste(dy.shape[0], weight.shape[0], weight.shape[1], dy.dtype) if path != "torch" else "cublas"


@torch.library.custom_op("maskedbert::masked_linear_fwd", mutates_args=())
def masked_linear_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], scores: Optional[torch.Tensor],
    mask: Optional[torch.Tensor], threshold_tensor: Optional[torch.Tensor], threshold: float, path: str,
    keep_masked_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, mask_out, kept = forward_impl(x, weight, bias, scores, mask, threshold_tensor, threshold, path,
                                     keep_masked_weight)
    return (y, mask_out if mask_out is not None else _empty(x, torch.uint8),
            kept if kept is not None else _empty(x, x.dtype))


@masked_linear_fwd.register_fake
def _(x, weight, bias, scores, mask, threshold_tensor, threshold, path, keep_masked_weight):
    N, K = weight.shape
    y = x.new_empty((x.shape[0], N))
    if _backward_reads_input_mask(mask, path):
        mask_out = _empty(x, torch.uint8)
    elif path == "torch":
        mask_out = x.new_empty((N, K), dtype=torch.bool)
    else:
        mask_out = x.new_empty((N, packed_cols(K)), dtype=torch.uint8)
    kept = x.new_empty((N, K)) if keep_masked_weight and path != "triton_fused" else _empty(x, x.dtype)
    return y, mask_out, kept


@torch.library.custom_op("maskedbert::masked_linear_bwd", mutates_args=())
def masked_linear_bwd(
    dy: torch.Tensor, x: Optional[torch.Tensor], weight: torch.Tensor, mask: torch.Tensor,
    masked_weight: Optional[torch.Tensor], path: str, ste: str, need_x: bool, need_weight: bool, need_bias: bool,
    need_scores: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db, ds = backward_impl(dy, x, weight, mask, masked_weight, path, ste, need_x, need_weight, need_bias,
                                   need_scores)
    return (dx if dx is not None else _empty(dy, dy.dtype), dw if dw is not None else _empty(dy, weight.dtype),
            db if db is not None else _empty(dy, torch.float32), ds if ds is not None else _empty(dy, torch.float32))


@masked_linear_bwd.register_fake
def _(dy, x, weight, mask, masked_weight, path, ste, need_x, need_weight, need_bias, need_scores):
    N, K = weight.shape
    dx = dy.new_empty((dy.shape[0], K)) if need_x else _empty(dy, dy.dtype)
    dw = weight.new_empty((N, K)) if need_weight else _empty(dy, weight.dtype)
    db = dy.new_empty((N,), dtype=torch.float32) if need_bias else _empty(dy, torch.float32)
    ds = dy.new_empty((N, K), dtype=torch.float32) if need_scores else _empty(dy, torch.float32)
    return dx, dw, db, ds


def _setup_context(ctx, inputs, output):
    x, weight, bias, _scores, mask, _threshold_tensor, _threshold, path, _keep = inputs
    _, mask_out, kept = output
    need_x, need_w, _, need_s = ctx.needs_input_grad[:4]
    saved_mask = mask if _backward_reads_input_mask(mask, path) else mask_out
    ctx.save_for_backward(x if (need_w or need_s) else None, weight, saved_mask, kept if need_x else None)
    ctx.path = path
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.set_materialize_grads(False)  # no zero gradients built for the mask and W*M outputs


def _backward(ctx, dy, _dmask, _dkept):
    if dy is None:
        return (None,) * 9
    x, weight, mask, kept = ctx.saved_tensors
    need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
    ste = _ste_for(ctx.path, dy, weight)
    dx, dw, db, ds = torch.ops.maskedbert.masked_linear_bwd(dy, x, weight, mask, kept, ctx.path, ste,
                                                           need_x, need_w, need_b, need_s)
    return (dx if need_x else None, dw if need_w else None, db.to(ctx.bias_dtype) if need_b else None,
            ds if need_s else None, None, None, None, None, None)


torch.library.register_autograd("maskedbert::masked_linear_fwd", _backward, setup_context=_setup_context)
