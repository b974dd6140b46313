"""AdamW with a switch for Adam's bias correction (the knob Mosbach et al. 2021 toggled).

The update is the Hugging Face form used by the original BERT code and by Mosbach et al.:

    m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g*g
    step = lr * sqrt(1 - b2^t) / (1 - b1^t)      (correct_bias=True; just lr when False)
    p -= step * m / (sqrt(v) + eps)
    p -= lr * weight_decay * p                   (decoupled decay, applied after the Adam step)

Note eps is added to sqrt(v) before the bias correction is folded into the step, unlike
torch.optim.AdamW (which divides v by its correction first); the two differ early in training.
BERT's original recipe ran with correct_bias=False, which makes the first updates large.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["AdamW"]


class AdamW(torch.optim.Optimizer):
    """AdamW(params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True)."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ):
        if not isinstance(lr, (int, float)) or lr < 0.0:
            raise ValueError(f"lr must be a number >= 0, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not isinstance(correct_bias, bool):
            raise TypeError(f"correct_bias must be a bool, got {type(correct_bias).__name__}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise TypeError("maskedbert.optim.AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(eps)
                step_size = lr
                if group["correct_bias"]:
                    t = state["step"]
                    step_size = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if wd > 0.0:
                    p.add_(p, alpha=-lr * wd)
        return loss
