"""MaskedLinear: an nn.Linear whose weight is multiplied by a binary mask, M = scores > threshold or fixed.

The layer wraps the original layer's weight and bias Parameters (the same objects, never a copy) and
adds either trainable fp32 `scores` (mode "scores", trained with the straight-through estimator) or a
fixed bit-packed mask buffer (mode "fixed", as in iterative magnitude pruning). The math runs in
`maskedbert.kernels.masked_linear`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from maskedbert.architectures import UnsupportedLayerError  # the one type for every refusal path
from maskedbert.config import MaskConfig
from maskedbert.kernels import pack_mask, topk_mask, unpack_mask
from maskedbert.kernels._describe import describe as _describe
from maskedbert.kernels.masked_linear import (MaskedLinearPlan, check_threshold, layout_key, masked_linear,
                                              validate_arguments)
from maskedbert.kernels.masked_linear_op import MaskedLinearFunction

# attributes the op's argument check depends on: assigning one drops the layer's plan
_CHECKED_ATTRIBUTES = frozenset({"weight", "bias", "scores", "packed_mask", "threshold_tensor", "backend", "mode"})


class MaskedLinear(nn.Module):
    """y = x @ (W*M)^T + b.

    Attributes:
        weight, bias: the wrapped Parameters (shared with the nn.Linear it was built from).
        scores: fp32 Parameter [out, in] in mode "scores", else None.
        packed_mask: uint8 buffer [out, ceil(in/8)] in mode "fixed" (bit k%8 of byte k//8 is column k).
        threshold: tau as a Python float; kept where scores > tau (strict, NaN is pruned). Reading it
            copies the value to the host (a synchronisation on CUDA); assigning a float or a 1-element
            tensor writes the buffer in place (a tensor on the layer's device without synchronising).
        threshold_tensor: the float32 0-d buffer that holds tau on the layer's device (moved by
            .to(), saved in the state_dict in mode "scores"). Code that runs every step (the forward,
            maskedbert.pruning's exact_sparsity_) reads and writes this buffer, never `threshold`.
        mode: "scores" or "fixed".
        backend: passed to masked_linear ("auto" picks Triton on CUDA, PyTorch elsewhere).
    """

    def __init__(
        self,
        weight: nn.Parameter,
        bias: nn.Parameter | None = None,
        *,
        mode: str = "scores",
        threshold: float = 1e-2,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self._plan = None  # a MaskedLinearPlan for the last argument layout seen by forward
        if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
            raise TypeError(f"weight must be a 2-D nn.Parameter [out_features, in_features], got {_describe(weight)}")
        if bias is not None and (not isinstance(bias, nn.Parameter) or bias.shape != (weight.shape[0],)):
            raise TypeError(f"bias must be None or an nn.Parameter of shape ({weight.shape[0]},), got {_describe(bias)}")
        # MaskConfig validates mode/threshold/backend with errors that name the field
        MaskConfig(mode=mode, threshold=threshold, backend=backend)
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        self.bias = bias
        self.mode = mode
        # persistent in mode "scores" so a resumed run keeps the thresholds pruning set; unused in "fixed"
        self.register_buffer("threshold_tensor", torch.tensor(float(threshold), dtype=torch.float32,
                                                              device=weight.device), persistent=mode == "scores")
        self.backend = backend
        # requires_grad of the wrapped Parameters before this layer changed it, restored by to_linear()
        self._weight_requires_grad = weight.requires_grad
        self._bias_requires_grad = None if bias is None else bias.requires_grad
        if mode == "scores":
            self.scores = nn.Parameter(torch.empty(weight.shape, dtype=torch.float32, device=weight.device))
            self.register_buffer("packed_mask", None)
        else:
            self.scores = None
            packed = torch.full(
                (self.out_features, (self.in_features + 7) // 8), 0, dtype=torch.uint8, device=weight.device
            )
            self.register_buffer("packed_mask", packed)
        self.set_mask_(torch.ones(weight.shape, dtype=torch.bool, device=weight.device))

    def __setattr__(self, name, value):
        if name in _CHECKED_ATTRIBUTES:
            self.__dict__["_plan"] = None
        super().__setattr__(name, value)

    def __getstate__(self):
        # copies and pickles (copy.deepcopy, torch.save) leave the plan out: it holds launchers, not
        # data, and the next forward makes a new one
        state = dict(super().__getstate__())
        state["_plan"] = None
        return state

    # ---- the threshold ---------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """tau as a Python float (synchronises with the device: keep it out of per-step code)."""
        return float(self.threshold_tensor)

    @threshold.setter
    def threshold(self, value: float | torch.Tensor) -> None:
        check_threshold(value)  # any device: copy_ moves it
        if isinstance(value, torch.Tensor):
            with torch.no_grad():
                self.threshold_tensor.copy_(value.detach().reshape(()))  # in place, no host synchronisation
        else:
            self.threshold_tensor.fill_(float(value))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # state_dicts saved before the threshold was a buffer lack it: the layer keeps its current value
        key = prefix + "threshold_tensor"
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)

    def _apply(self, fn, recurse=True):
        # model.half() / .to(dtype) cast every floating tensor; tau and the scores (and their grads) stay
        # float32: the kernels compare in float32, and in bf16 a score of 0.02 (spacing ~1.2e-4) would
        # not move under a 5e-5 step, so mask training would silently stop. Devices still move.
        threshold, scores = self.threshold_tensor, self.scores

        def keep_scores_float32(t):
            out = fn(t)
            if scores is not None and (t is scores or t is scores.grad) and out.dtype != t.dtype:
                out = t.to(device=out.device)
            return out

        super()._apply(keep_scores_float32, recurse)
        self.__dict__["_plan"] = None  # dtypes and devices may have changed
        if self.threshold_tensor.dtype != torch.float32:
            self.threshold_tensor = threshold.to(device=self.threshold_tensor.device, dtype=torch.float32)
        return self

    # ---- construction / export -----------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, config: MaskConfig | None = None, **overrides) -> "MaskedLinear":
        """Wrap `linear` (its weight and bias Parameters, no copy) with scores or a fixed mask.

        `overrides` change single MaskConfig fields, e.g. from_linear(lin, sparsity=0.5).

        Note: this sets requires_grad on the caller's weight and bias Parameters to
        config.weights_train (False by default in mode "scores"); to_linear() restores the old flags.
        """
        if isinstance(linear, MaskedLinear):
            raise TypeError("linear is already a MaskedLinear; masks cannot be applied twice")
        if not isinstance(linear, nn.Linear):
            raise UnsupportedLayerError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}"
                                        + (" (GPT-2 style Conv1D layers are not supported)"
                                           if type(linear).__name__ == "Conv1D" else ""))
        config = MaskConfig.resolve(config)
        if overrides:
            config = config.replace(**overrides)
        layer = cls(linear.weight, linear.bias, mode=config.mode, threshold=config.threshold, backend=config.backend)
        layer.init_scores_(config.score_init, config.sparsity)
        layer.set_weights_trainable_(config.weights_train)
        return layer

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear with weight W*M (dense, zeros where pruned) and this layer's bias Parameter.

        The weight is a new tensor; the bias is the same Parameter object. The requires_grad flags the
        wrapped Parameters had before masking are restored.
        """
        with torch.no_grad():
            merged = torch.where(self.mask(), self.weight, torch.zeros((), dtype=self.weight.dtype,
                                                                        device=self.weight.device))
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device="meta")  # no throwaway init: both Parameters are replaced below
        linear.weight = nn.Parameter(merged.contiguous(), requires_grad=self._weight_requires_grad)
        if self.bias is not None:
            self.bias.requires_grad_(self._bias_requires_grad)
            linear.bias = self.bias
        return linear

    # ---- the mask ------------------------------------------------------------------------------
    def mask(self) -> torch.Tensor:
        """bool [out_features, in_features]: True where the weight is kept."""
        if self.mode == "scores":
            # float32 like the forward (model.half() leaves fp16 scores); the buffer keeps this sync-free
            return self.scores.detach().float() > self.threshold_tensor
        return unpack_mask(self.packed_mask, self.in_features)

    @torch.no_grad()
    def set_mask_(self, mask: torch.Tensor) -> "MaskedLinear":
        """Make `mask` (bool [out, in]) the current mask.

        Mode "fixed" stores it packed. Mode "scores" rewrites the scores in place (the Parameter
        object stays, so optimizers keep pointing at it): kept -> 2*threshold (threshold + 1 if
        threshold <= 0), pruned -> 0 (threshold - 1 if threshold < 0).
        """
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {_describe(mask)}")
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"mask must have shape {tuple(self.weight.shape)}, got {tuple(mask.shape)}")
        mask = mask.to(self.weight.device)
        if self.mode == "fixed":
            self.packed_mask = pack_mask(mask.contiguous())
        else:
            kept, pruned = _kept_value(self.threshold), _pruned_value(self.threshold)
            self.scores.copy_(torch.where(mask, kept, pruned).to(torch.float32))
        return self

    @torch.no_grad()
    def init_scores_(self, score_init: str = "magnitude", sparsity: float = 0.0) -> "MaskedLinear":
        """(Re)initialise the scores (mode "scores") or the fixed mask (mode "fixed", magnitude only).

        "magnitude": exactly round(sparsity * numel) smallest |W| pruned (the rest at 2*threshold);
        "magnitude_soft": |W|; "constant": all kept; "uniform": U(tau - sparsity*w, tau + (1-sparsity)*w)
        with w = 2|tau| (1 if tau == 0), i.e. a `sparsity` fraction pruned in expectation;
        "kaiming": nn.Linear's kaiming-uniform init (a = sqrt(5)).
        """
        MaskConfig(mode=self.mode, score_init=score_init, sparsity=sparsity, threshold=self.threshold)
        if score_init == "magnitude":
            return self.set_mask_(keep_largest(self.weight.detach().abs(), sparsity))
        tau = self.threshold
        if score_init == "magnitude_soft":
            self.scores.copy_(self.weight.detach().abs().float())
        elif score_init == "constant":
            self.scores.fill_(_kept_value(tau))
        elif score_init == "uniform":
            width = 2.0 * abs(tau) if tau != 0 else 1.0
            self.scores.uniform_(tau - sparsity * width, tau + (1.0 - sparsity) * width)
        elif score_init == "kaiming":
            nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))
        return self

    def set_weights_trainable_(self, trainable: bool) -> "MaskedLinear":
        """Set requires_grad on the wrapped weight and bias (the caller's Parameters)."""
        self.weight.requires_grad_(trainable)
        if self.bias is not None:
            self.bias.requires_grad_(trainable)
        return self

    @property
    def sparsity(self) -> float:
        """Fraction of the weight matrix that is pruned."""
        numel = self.weight.numel()
        return 0.0 if numel == 0 else 1.0 - self.mask().sum().item() / numel

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the op's arguments are checked, and its launches prepared, once per argument layout
        # (layout_key: dtypes, devices, shapes, strides, ...), not on every call: per-step host time
        # matters at 73 layers. The tensors are read from the module's dicts on every call (as
        # nn.Module.__getattr__ does, without its cost), so swapped Parameters are always seen.
        params, buffers = self._parameters, self._buffers
        weight, bias, scores = params["weight"], params.get("bias"), params.get("scores")
        mask, threshold = buffers.get("packed_mask"), buffers["threshold_tensor"]
        if scores is not None and scores.dtype != torch.float32:  # model.half() casts every parameter
            scores = scores.float()
        if torch.compiler.is_compiling():  # traced once; the registered op runs
            return masked_linear(x, weight, bias, scores=scores, mask=mask, threshold=threshold, backend=self.backend)
        key = layout_key(x, weight, bias, scores, mask, threshold, self.backend)
        plan = self._plan
        if plan is None or plan.key != key:
            validate_arguments(x, weight, bias, scores, mask, threshold, self.backend)
            plan = self.__dict__["_plan"] = MaskedLinearPlan(key, x, weight, scores, mask, threshold, self.backend,
                                                             True)
        if plan.direct_path is not None and torch.is_grad_enabled():  # what plan(...) would do, one call less
            return MaskedLinearFunction.apply(x, weight, bias, scores, mask, threshold, plan.direct_path)
        return plan(x, weight, bias, scores, mask, threshold)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"mode={self.mode}, threshold={self.threshold:g}, sparsity={self.sparsity:.4f}")


def keep_largest(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    """bool mask of `values`' shape keeping all but exactly round(sparsity * numel) elements, largest kept.

    Ties: the lower flat index is kept (maskedbert.kernels.topk_mask's rule).
    """
    if round(sparsity * values.numel()) == 0:  # nothing to prune: skip the select
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    return topk_mask(values, sparsity)


def _kept_value(threshold: float) -> float:
    return 2.0 * threshold if threshold > 0 else threshold + 1.0


def _pruned_value(threshold: float) -> float:
    return 0.0 if threshold >= 0 else threshold - 1.0
