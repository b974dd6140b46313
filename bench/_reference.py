"""The reference code's masked layer, shared by the benchmarks: m = (S > t) with a straight-through
binarizer, then F.linear(x, W * m). This is the eager baseline maskedbert is measured against."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class ThresholdSTE(torch.autograd.Function):
    """mask = (S > t) forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores, threshold):
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def eager_masked_linear(x, weight, bias, scores, threshold):
    return F.linear(x, weight * ThresholdSTE.apply(scores, threshold).to(weight.dtype), bias)
