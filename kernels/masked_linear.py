"""masked_linear: y = x @ (W*M)^T + b with M = scores > threshold (or a given mask).

Launchers (Triton, each with a PyTorch twin of the same signature):
    mask_prep      one pass over S/M and W -> W*M in the compute dtype and/or the packed mask
    masked_matmul  GEMM that applies the packed mask while loading W (forward and dx)
    ste_grad       dy^T x with the straight-through epilogue -> dS, dW, db
The registered ops (masked_linear_op.py: maskedbert::masked_linear_fwd / _bwd, with fake
implementations and autograd) are written once against these launchers; the backend chooses which
implementation of each they use.

Host time: at BERT-base a step is ~6-10 ms of GPU time over 73 masked layers, so per-call Python
matters. Eager calls run a MaskedLinearPlan, worked out once per argument layout (layout_key:
types, dtypes, devices, shapes, strides, threshold kind, backend, autocast state): the argument
checks, the backend, and the Triton launches' constant arguments. A call whose layout differs is
checked and planned again, so nothing stale is ever reused. MaskedLinear keeps its own plan.
"""
from __future__ import annotations

import math

import torch

from ._describe import describe as _describe
from .masked_linear_op import MaskedLinearFunction, MaskedLinearPath  # (importing it registers the maskedbert:: ops)
from ._runtime import resolve_backend
from .dispatch import choose_path
from .mask_prep import packed_cols

BACKENDS = ("auto", "torch", "triton", "triton_dense", "triton_fused")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def masked_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    scores: torch.Tensor | None = None,
    threshold: float | torch.Tensor = 0.0,
    mask: torch.Tensor | None = None,
    backend: str = "auto",
    keep_masked_weight: bool = True,
) -> torch.Tensor:
    """y = x @ (W*M)^T + b, with M = (scores > threshold) or a given fixed mask.

    Args:
        x: activations [..., K] in float32/float16/bfloat16.
        weight: W [N, K]; its gradient is dW = (dy^T x) * M when it requires grad.
        bias: optional [N].
        scores: float32 [N, K] mask scores, trained by the straight-through estimator
            dS = (dy^T x) * W. Kept where scores > threshold (strict; NaN is pruned).
        threshold: the threshold tau for `scores`: a number, or a 1-element floating tensor on the
            scores' device (compared as float32 and read by the kernels on the device, so the
            host never waits for it; it gets no gradient).
        mask: a fixed mask instead of scores: bool [N, K] or bit-packed uint8 [N, ceil(K/8)]
            (see maskedbert.kernels.pack_mask).
        backend: "auto" (Triton on CUDA, the PyTorch twin elsewhere), "torch", "triton" (the
            dispatcher picks a Triton path per shape), "triton_dense" or "triton_fused".
        keep_masked_weight: keep W*M (N x K in the compute dtype) from the forward until the
            backward, which then skips preparing it again for dx (when x needs a gradient; not on
            "triton_fused", which never writes W*M). False saves that memory.

    Under torch.compile it runs as the registered op maskedbert::masked_linear_fwd (one node);
    eager calls run a plan prepared once per argument layout (see the module docstring).
    Under torch.autocast the op computes in the autocast dtype (as F.linear does) with fp32
    accumulation; gradients come back in each input's own dtype.
    """
    if torch.compiler.is_compiling():  # traced once: checks cost nothing at run time
        validate_arguments(x, weight, bias, scores, mask, threshold, backend)
        return _masked_linear_op(x, weight, bias, scores, mask, threshold, backend, keep_masked_weight)
    try:
        key = layout_key(x, weight, bias, scores, mask, threshold, backend, keep_masked_weight)
        plan = _PLANS.get(key)
    except (AttributeError, TypeError, IndexError):  # not tensors: the checks below name the argument
        key = plan = None
    if plan is None:
        validate_arguments(x, weight, bias, scores, mask, threshold, backend)
        plan = MaskedLinearPlan(key, x, weight, scores, mask, threshold, backend, keep_masked_weight)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan(x, weight, bias, scores, mask, threshold)


# masked_linear's plans by argument layout (layout_key); bounded, cleared when full
_PLANS: dict = {}
_MAX_PLANS = 256


def clear_plans() -> None:
    """Forget every prepared plan (tools that swap launchers or checks call this around their patches)."""
    _PLANS.clear()


_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def layout_key(x, weight, bias, scores, mask, threshold, backend: str, keep_masked_weight: bool = True) -> tuple:
    """Everything about masked_linear's arguments that the argument checks and a MaskedLinearPlan
    depend on: the type, dtype, device and shape of each tensor (of x only the last dimension, so the
    token count may vary), the strides the prepared launches read (weight, scores, mask), the kind of
    threshold, the backend and the autocast state. Equal keys mean the checks would pass again and
    the plan's launches fit. Raises AttributeError (or TypeError) when an argument that must be a
    tensor is not. Written out flat: it runs on every call."""
    autocast = None
    if _any_autocast():
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            autocast = torch.get_autocast_dtype(device_type)
    return (type(x), x.dtype, x.device, x.shape[-1:],
            type(weight), weight.dtype, weight.device, weight.shape, weight.stride(),
            None if bias is None else (type(bias), bias.dtype, bias.device, bias.shape),
            None if scores is None else (type(scores), scores.dtype, scores.device, scores.shape, scores.stride()),
            None if mask is None else (type(mask), mask.dtype, mask.device, mask.shape, mask.stride(),
                                       mask.requires_grad),
            (type(threshold), threshold.dtype, threshold.device, threshold.shape)
            if isinstance(threshold, torch.Tensor) else type(threshold),
            backend, keep_masked_weight, autocast)


class MaskedLinearPlan:
    """masked_linear for one argument layout (layout_key), worked out once: the backend resolved,
    the compute dtype, and each path it runs prepared (masked_linear_op.MaskedLinearPath: the Triton
    launches' constant arguments). Built after the argument checks passed; calling it with tensors
    of another layout is a bug of the caller (masked_linear and MaskedLinear key on the layout)."""

    __slots__ = ("key", "device_type", "autocast", "compute_dtype", "fixed_path", "direct_path", "paths", "N", "K",
                 "threshold_is_number", "threshold_to_fp32", "keep_masked_weight")

    def __init__(self, key, x, weight, scores, mask, threshold, backend: str, keep_masked_weight: bool):
        self.key = key
        device = x.device
        self.device_type = device.type
        self.autocast = torch.is_autocast_enabled(self.device_type)
        self.compute_dtype = torch.get_autocast_dtype(self.device_type) if self.autocast else x.dtype
        self.N, self.K = weight.shape
        self.threshold_is_number = not isinstance(threshold, torch.Tensor)
        self.threshold_to_fp32 = not self.threshold_is_number and threshold.dtype != torch.float32
        self.keep_masked_weight = keep_masked_weight
        self.paths: dict[str, MaskedLinearPath] = {}
        resolved = resolve_backend(backend, device, BACKENDS)
        # "triton" (or "auto" on CUDA): the dispatcher picks a path per token count, call by call
        self.fixed_path = None if resolved == "triton" else self._path(resolved, weight, scores, mask, threshold)
        # the path a caller may hand to MaskedLinearFunction itself (with grad mode on): nothing to
        # convert, no autocast, no per-call dispatch; else None
        self.direct_path = (self.fixed_path if not (self.autocast or self.threshold_is_number or self.threshold_to_fp32)
                            else None)

    def _path(self, name, weight, scores, mask, threshold) -> MaskedLinearPath:
        path = self.paths.get(name)
        if path is None:
            if self.threshold_to_fp32:
                threshold = threshold.to(torch.float32)
            path = self.paths[name] = MaskedLinearPath(name, weight, scores, mask, threshold, self.compute_dtype,
                                                       self.keep_masked_weight)
        return path

    def __call__(self, x, weight, bias, scores, mask, threshold):
        if self.threshold_is_number:
            threshold = float(threshold)
        elif self.threshold_to_fp32:
            threshold = threshold.to(torch.float32)
        if self.autocast:
            return self._autocast_call(x, weight, bias, scores, mask, threshold)
        path = self.fixed_path
        if path is None:
            path = self._dispatch(x, weight, scores, mask, threshold)
        if torch.is_grad_enabled():
            return MaskedLinearFunction.apply(x, weight, bias, scores, mask, threshold, path)
        return path.inference(x, weight, bias, scores, mask, threshold)

    def _dispatch(self, x, weight, scores, mask, threshold) -> MaskedLinearPath:
        name = choose_path(math.prod(x.shape[:-1]), self.N, self.K, self.compute_dtype)
        return self._path(name, weight, scores, mask, threshold)

    def _autocast_call(self, x, weight, bias, scores, mask, threshold):
        # as F.linear under autocast: computed in the autocast dtype (x cast with autograd), autocast
        # off inside so that the op's own dtypes decide
        if x.dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        with torch.autocast(self.device_type, enabled=False):
            path = self.fixed_path or self._dispatch(x, weight, scores, mask, threshold)
            if torch.is_grad_enabled():
                return MaskedLinearFunction.apply(x, weight, bias, scores, mask, threshold, path)
            return path.inference(x, weight, bias, scores, mask, threshold)


def _masked_linear_op(x, weight, bias, scores, mask, threshold, backend: str, keep_masked_weight: bool):
    """The registered op maskedbert::masked_linear_fwd (one graph node under torch.compile)."""
    K = weight.shape[1]
    lead = x.shape[:-1]
    device_type = x.device.type
    x2 = x.reshape(math.prod(lead), K)  # not -1: K may be 0
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
        if x2.dtype != compute_dtype:
            x2 = x2.to(compute_dtype)
    path = _path_for(backend, x2, weight)
    keep = keep_masked_weight and x.requires_grad and torch.is_grad_enabled()
    if isinstance(threshold, torch.Tensor):
        tau_tensor = threshold if threshold.dtype == torch.float32 else threshold.to(torch.float32)
        tau = 0.0
    else:
        tau_tensor, tau = None, float(threshold)
    with torch.autocast(device_type, enabled=False):
        y = torch.ops.maskedbert.masked_linear_fwd(x2, weight, bias, scores, mask, tau_tensor, tau, path, keep)[0]
    return y.reshape(*lead, weight.shape[0])


def check_threshold(threshold, device: torch.device | None = None, owner: str = "the op") -> None:
    """A threshold is a number or a 1-element floating tensor (on `device`, when given); errors name it."""
    if isinstance(threshold, torch.Tensor):
        if not threshold.is_floating_point():
            raise TypeError(f"threshold must be a number or a 1-element floating tensor, got {_describe(threshold)}")
        if threshold.numel() != 1:
            raise ValueError(f"threshold must be a number or a 1-element tensor, got {_describe(threshold)}")
        if device is not None and threshold.device != device:
            raise ValueError(f"threshold must be on the device of {owner} ({device}), got {_describe(threshold)}")
    elif not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise TypeError(f"threshold must be a number, got {_describe(threshold)}")


def _path_for(backend: str, x2: torch.Tensor, weight: torch.Tensor) -> str:
    if resolve_backend(backend, x2.device, BACKENDS) == "torch":
        return "torch"
    if backend in ("triton_dense", "triton_fused"):
        return backend
    return choose_path(x2.shape[0], weight.shape[0], weight.shape[1], x2.dtype)


def validate_arguments(x, weight, bias, scores, mask, threshold, backend) -> None:
    """masked_linear's argument checks (errors name the argument and what was expected)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {_describe(t)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {_describe(t)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got {_describe(weight)}")
    N, K = weight.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"x must have last dimension in_features={K} (weight is [{N}, {K}]), got {_describe(x)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"bias must be a float tensor or None, got {_describe(bias)}")
        if bias.shape != (N,):
            raise ValueError(f"bias must have shape ({N},) to match weight [{N}, {K}], got {_describe(bias)}")
    if (scores is None) == (mask is None):
        raise ValueError("pass exactly one of scores= (trained mask scores) or mask= (a fixed mask), "
                         f"got {'both' if scores is not None else 'neither'}")
    if scores is not None:
        if not isinstance(scores, torch.Tensor) or scores.dtype != torch.float32:
            raise TypeError(f"scores must be a float32 tensor, got {_describe(scores)}")
        if scores.shape != weight.shape:
            raise ValueError(f"scores must have the weight's shape ({N}, {K}), got {_describe(scores)}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {_describe(mask)}")
        if mask.dtype == torch.bool:
            if mask.shape != weight.shape:
                raise ValueError(f"bool mask must have the weight's shape ({N}, {K}), got {_describe(mask)}")
        elif mask.dtype == torch.uint8:
            if mask.shape != (N, packed_cols(K)):
                raise ValueError(f"bit-packed uint8 mask must have shape ({N}, {packed_cols(K)}) for weight "
                                 f"[{N}, {K}], got {_describe(mask)}")
        else:
            raise TypeError(f"mask must be bool [N, K] or bit-packed uint8 [N, ceil(K/8)], got {_describe(mask)}")
        if mask.requires_grad:
            raise ValueError("mask is fixed and cannot require grad; pass trainable scores= instead")
    owner = "weight" if scores is None else "scores"
    check_threshold(threshold, (weight if scores is None else scores).device, owner)
    named = [("x", x), ("weight", weight), ("bias", bias), ("scores", scores), ("mask", mask)]
    devices = {name: t.device for name, t in named if t is not None}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all tensors must be on one device, got {where}")
