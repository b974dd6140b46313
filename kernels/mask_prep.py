"""Mask preparation: one pass over the scores (or a mask) and the weight.

From a mask source (fp32 scores compared to a threshold, a bool mask, or a bit-packed mask) it
writes any of: the masked weight W*M in the compute dtype, the bit-packed mask, the bool mask.
This is the only place fp32 scores are read on the forward path: the GEMMs never stream them.

Bit-packed format (format version 1): uint8 tensor [N, ceil(K/8)]; element (n, k) of the mask is
bit (k % 8) of byte [n, k // 8], least significant bit first; padding bits are zero.
"""
from __future__ import annotations

import importlib

import torch

from ._runtime import check_triton_tensors, on_other_cuda_device, require_triton

SOURCE_SCORES, SOURCE_BOOL, SOURCE_PACKED = 0, 1, 2


def packed_cols(num_cols: int) -> int:
    return (num_cols + 7) // 8


def _source(scores, mask):
    if scores is not None:
        return scores, SOURCE_SCORES
    if mask.dtype == torch.bool:
        return mask, SOURCE_BOOL
    return mask, SOURCE_PACKED


def mask_prep_triton(
    weight: torch.Tensor | None,
    *,
    scores: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    threshold: float | torch.Tensor = 0.0,
    shape: tuple[int, int] | None = None,
    dense_dtype: torch.dtype | None = None,
    want_dense: bool = True,
    want_packed: bool = True,
    want_bool: bool = False,
):
    """Returns (W*M or None, packed mask or None, bool mask or None); see the module docstring.

    Exactly one of `scores` (fp32, kept where > threshold) or `mask` (bool [N, K] or packed uint8)
    is the source. `threshold` is a number or a 1-element fp32 tensor on the scores' device (read by
    the kernel, no host synchronisation). `shape` (N, K) is needed only when neither weight nor a
    bool/score source gives it.
    """
    launch = MaskPrepLaunch(weight, scores=scores, mask=mask, threshold=threshold, shape=shape,
                            dense_dtype=dense_dtype, want_dense=want_dense, want_packed=want_packed,
                            want_bool=want_bool)
    return launch(weight, scores if scores is not None else mask, threshold)


class MaskPrepLaunch:
    """`mask_prep_triton` prepared for one layout of its arguments (shapes, dtypes, strides, device,
    source kind, threshold kind, outputs wanted): the checks, the grid and the constant kernel
    arguments are worked out once; a call allocates the outputs and launches. Calls must pass
    tensors of the layout it was built from (callers key their caches on it)."""

    __slots__ = ("kind", "threshold_from_ptr", "threshold_is_tensor", "dense_like_weight", "dense_spec",
                 "packed_spec", "bool_spec", "empty", "grid", "tail", "constexprs", "kernels")

    def __init__(self, weight, *, scores=None, mask=None, threshold=0.0, shape=None, dense_dtype=None,
                 want_dense=True, want_packed=True, want_bool=False):
        require_triton()
        src, kind = _source(scores, mask)
        N, K = _resolve_shape(weight, src, kind, shape)
        self.kind = kind
        self.threshold_is_tensor = isinstance(threshold, torch.Tensor)
        self.threshold_from_ptr = self.threshold_is_tensor and kind == SOURCE_SCORES
        check_triton_tensors(weight=weight, scores=scores, mask=mask,
                             threshold=threshold if self.threshold_from_ptr else None)
        device = src.device
        dense_dtype = dense_dtype or (weight.dtype if weight is not None else None)
        self.dense_spec = ((N, K), dense_dtype, device) if want_dense else None
        # torch.empty_like costs half of torch.empty(shape, dtype=, device=) on the host
        self.dense_like_weight = want_dense and dense_dtype == weight.dtype and weight.is_contiguous()
        self.packed_spec = ((N, packed_cols(K)), torch.uint8, device) if want_packed else None
        self.bool_spec = ((N, K), torch.bool, device) if want_bool else None
        self.empty = N == 0 or K == 0
        BLOCK_N, BLOCK_B = 32, 16
        self.grid = (-(-N // BLOCK_N), -(-packed_cols(K) // BLOCK_B))
        # the trailing kernel arguments: sizes, then the strides of the source, the weight and the outputs
        # (fresh contiguous allocations: row strides K for dense and bool, ceil(K/8) for packed)
        self.tail = (N, K, *src.stride(), *(weight.stride() if want_dense else (0, 0)),
                     *((K, 1) if want_dense else (0, 0)), packed_cols(K) if want_packed else 0, K if want_bool else 0)
        self.constexprs = dict(SOURCE=kind, THRESHOLD_FROM_PTR=self.threshold_from_ptr, WRITE_DENSE=want_dense,
                               WRITE_PACKED=want_packed, WRITE_BOOL=want_bool, BLOCK_N=BLOCK_N, BLOCK_B=BLOCK_B)
        # looked up per launch (`self.kernels._mask_prep_kernel`), so tools can swap the kernel
        self.kernels = importlib.import_module(".mask_prep_kernel", __package__)

    def __call__(self, weight, source, threshold):
        """(W*M or None, packed or None, bool or None) for `source` (the scores or the mask)."""
        if self.dense_like_weight:
            dense = torch.empty_like(weight)
        else:
            dense = _allocate(self.dense_spec)
        packed = _allocate(self.packed_spec) if self.packed_spec else None
        as_bool = _allocate(self.bool_spec) if self.bool_spec else None
        if self.empty:
            return dense, packed, as_bool
        if self.kind == SOURCE_BOOL:
            source = source.view(torch.uint8)
        dummy = packed if packed is not None else source  # unused pointers still need a tensor
        # a number goes in as a kernel argument; a tensor is never read on the host (float() would sync)
        args = (source, weight if dense is not None else dummy, dense if dense is not None else dummy, dummy,
                as_bool.view(torch.uint8) if as_bool is not None else dummy,
                0.0 if self.threshold_is_tensor else float(threshold),
                threshold if self.threshold_from_ptr else dummy, *self.tail)
        launch = self.kernels._mask_prep_kernel[self.grid]
        if on_other_cuda_device(source):
            with torch.cuda.device(source.device):
                launch(*args, **self.constexprs)
        else:
            launch(*args, **self.constexprs)
        return dense, packed, as_bool


    def dense(self, weight, source, threshold):
        """W*M alone, for a launch made with want_dense only: __call__(...)[0] with less to decide
        (it runs once per masked layer and step)."""
        if not self.dense_like_weight or self.empty or self.kind == SOURCE_BOOL or self.packed_spec or self.bool_spec:
            return self(weight, source, threshold)[0]
        dense = torch.empty_like(weight)
        args = (source, weight, dense, source, source, 0.0 if self.threshold_is_tensor else float(threshold),
                threshold if self.threshold_from_ptr else source, *self.tail)
        launch = self.kernels._mask_prep_kernel[self.grid]
        if on_other_cuda_device(source):
            with torch.cuda.device(source.device):
                launch(*args, **self.constexprs)
        else:
            launch(*args, **self.constexprs)
        return dense


def _allocate(spec):
    return None if spec is None else torch.empty(spec[0], dtype=spec[1], device=spec[2])


def mask_prep_torch(
    weight: torch.Tensor | None,
    *,
    scores: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    threshold: float | torch.Tensor = 0.0,
    shape: tuple[int, int] | None = None,
    dense_dtype: torch.dtype | None = None,
    want_dense: bool = True,
    want_packed: bool = True,
    want_bool: bool = False,
):
    """PyTorch twin of `mask_prep_triton` (same signature, same outputs); a tensor threshold is
    compared as it is (no host synchronisation)."""
    src, kind = _source(scores, mask)
    N, K = _resolve_shape(weight, src, kind, shape)
    if kind == SOURCE_SCORES:
        if isinstance(threshold, torch.Tensor):
            threshold = threshold.reshape(())  # a 1-element tensor of any shape must not broadcast the mask
        keep = src > threshold
    elif kind == SOURCE_BOOL:
        keep = src
    else:
        keep = unpack_bits_torch(src, K)
    dense = torch.where(keep, weight, 0).to(dense_dtype or weight.dtype) if want_dense else None
    packed = pack_bits_torch(keep) if want_packed else None
    as_bool = keep.clone() if want_bool else None  # never alias the caller's mask
    return dense, packed, as_bool


def _resolve_shape(weight, src, kind, shape):
    if weight is not None:
        return tuple(weight.shape)
    if kind != SOURCE_PACKED:
        return tuple(src.shape)
    if shape is None:
        raise ValueError("shape=(N, K) is required to read a bit-packed mask without a weight")
    return tuple(shape)



def pack_bits_torch(keep: torch.Tensor) -> torch.Tensor:
    N, K = keep.shape
    pad = packed_cols(K) * 8 - K
    bits = torch.nn.functional.pad(keep.to(torch.uint8), (0, pad)).view(N, packed_cols(K), 8)
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=keep.device)
    return (bits * weights).sum(dim=-1, dtype=torch.uint8)


def unpack_bits_torch(packed: torch.Tensor, num_cols: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(packed.shape[0], packed.shape[1] * 8)[:, :num_cols].bool()
