"""The straight-through epilogue on a precomputed G = dy^T x (fp32 [N, K]): one elementwise pass

    dS = G * W          (scores)
    dW = G * M          (weight, in the weight's dtype; M from the bit-packed mask)

With G from cuBLAS (ste_grad.ste_grad_cublas) this is the default weight-side backward: no
atomics, so the results are bitwise reproducible run to run.
"""
from __future__ import annotations

import importlib

import torch

from ._runtime import check_triton_tensors, on_other_cuda_device, require_triton
from .mask_prep import mask_prep_torch

BLOCK_N, BLOCK_K = 32, 128


def ste_epilogue_triton(g: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None, *, want_scores: bool,
                        want_weight: bool):
    """Returns (dS fp32 or None, dW in weight.dtype or None). `packed` may be None when not
    want_weight (dS alone reads no mask)."""
    launch = SteEpilogueLaunch(weight)
    check_triton_tensors(g=g, packed=packed)
    return launch(g, weight, packed, want_scores, want_weight)


class SteEpilogueLaunch:
    """`ste_epilogue_triton` prepared for one layout of the weight (shape, dtype, strides, device):
    the checks, the grid and the constant kernel arguments are worked out once; a call allocates the
    outputs and launches. G and the packed mask may have any strides (read per call)."""

    __slots__ = ("N", "K", "contiguous", "grid", "weight_strides", "ds_spec", "dw_spec", "constexprs", "kernels")

    def __init__(self, weight: torch.Tensor):
        require_triton()
        check_triton_tensors(weight=weight)
        self.N, self.K = N, K = weight.shape
        self.contiguous = (K, 1)
        self.grid = (-(-N // BLOCK_N), -(-K // BLOCK_K))
        self.weight_strides = tuple(weight.stride())
        self.ds_spec = ((N, K), torch.float32, weight.device)
        self.dw_spec = ((N, K), weight.dtype, weight.device)
        # indexed by (want_scores, want_weight)
        self.constexprs = {(s, w): dict(WRITE_DS=s, WRITE_DW=w, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
                           for s in (False, True) for w in (False, True)}
        # looked up per launch (`self.kernels._ste_epilogue_kernel`), so tools can swap the kernel
        self.kernels = importlib.import_module(".ste_epilogue_kernel", __package__)

    def __call__(self, g, weight, packed, want_scores: bool, want_weight: bool):
        """(dS fp32 or None, dW in weight.dtype or None) from G = dy^T x (fp32 [N, K])."""
        g_strides = g.stride()
        if want_scores:  # torch.empty_like(G) (fp32, contiguous from the GEMM) costs half of torch.empty
            ds = torch.empty_like(g) if g_strides == self.contiguous and g.dtype == torch.float32 else \
                torch.empty(self.ds_spec[0], dtype=torch.float32, device=self.ds_spec[2])
        else:
            ds = None
        dw = torch.empty(self.dw_spec[0], dtype=self.dw_spec[1], device=self.dw_spec[2]) if want_weight else None
        if not (want_scores or want_weight) or self.N == 0 or self.K == 0:
            return ds, dw
        # unused pointers still need a tensor (G); fresh outputs are contiguous (row stride K)
        ds_arg, ds_strides = (ds, (self.K, 1)) if ds is not None else (g, g_strides)
        dw_arg, dw_strides = (dw, (self.K, 1)) if dw is not None else (g, g_strides)
        if packed is None:  # dS alone: the mask is not read
            packed = g
        args = (g, weight, packed, ds_arg, dw_arg, self.N, self.K, *g_strides, *self.weight_strides,
                *packed.stride(), *ds_strides, *dw_strides)
        launch = self.kernels._ste_epilogue_kernel[self.grid]
        if on_other_cuda_device(g):
            with torch.cuda.device(g.device):
                launch(*args, **self.constexprs[want_scores, want_weight])
        else:
            launch(*args, **self.constexprs[want_scores, want_weight])
        return ds, dw


    def scores_grad(self, g, weight):
        """dS alone (no mask read): __call__(g, weight, None, True, False)[0] with less to decide (it
        runs once per masked layer and step in mask training)."""
        g_strides = g.stride()
        if g_strides != self.contiguous or g.dtype != torch.float32 or self.N == 0 or self.K == 0:
            return self(g, weight, None, True, False)[0]
        ds = torch.empty_like(g)
        # G stands in for the unused mask and dW pointers; dS is contiguous like G
        args = (g, weight, g, ds, g, self.N, self.K, *g_strides, *self.weight_strides, *g_strides, *g_strides,
                *g_strides)
        launch = self.kernels._ste_epilogue_kernel[self.grid]
        if on_other_cuda_device(g):
            with torch.cuda.device(g.device):
                launch(*args, **self.constexprs[True, False])
        else:
            launch(*args, **self.constexprs[True, False])
        return ds


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
