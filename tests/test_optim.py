"""maskedbert.optim.AdamW against a hand computation of the Hugging Face update, both correct_bias settings."""
from __future__ import annotations

import math

import pytest
import torch

import maskedbert as mb


def _hand_adamw(p0, grads, lr, betas, eps, wd, correct_bias):
    """Scalar-by-scalar reference in float64 (plain Python floats)."""
    b1, b2 = betas
    out = []
    for x0, gs in zip(p0, zip(*grads)):
        x, m, v = x0, 0.0, 0.0
        for t, g in enumerate(gs, start=1):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            step = lr * math.sqrt(1 - b2**t) / (1 - b1**t) if correct_bias else lr
            x = x - step * m / (math.sqrt(v) + eps)
            x = x - lr * wd * x
        out.append(x)
    return out


@pytest.mark.parametrize("correct_bias", [True, False])
def test_adamw_matches_hand_computation(correct_bias):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
    p0 = p.detach().clone().tolist()
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(5)]
    opt = mb.optim.AdamW([p], lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, correct_bias=correct_bias)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = _hand_adamw(p0, [g.tolist() for g in grads], 0.1, (0.9, 0.98), 1e-6, 0.01, correct_bias)
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_first_step_size_depends_on_bias_correction():
    # step 1: m = 0.1 g, v = 0.001 g^2; uncorrected moves lr * 0.1/sqrt(0.001) ~ 3.16 lr, corrected ~ lr
    results = {}
    for correct_bias in (True, False):
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        p.grad = torch.ones(1, dtype=torch.float64)
        mb.optim.AdamW([p], lr=1.0, eps=0.0, correct_bias=correct_bias).step()
        results[correct_bias] = -p.item()
    assert results[True] == pytest.approx(1.0, rel=1e-12)
    assert results[False] == pytest.approx(0.1 / math.sqrt(0.001), rel=1e-12)


def test_weight_decay_is_decoupled_and_uses_updated_weight():
    p = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    p.grad = torch.zeros(1, dtype=torch.float64)  # zero gradient: only the decay acts
    mb.optim.AdamW([p], lr=0.5, weight_decay=0.1).step()
    assert p.item() == pytest.approx(2.0 * (1 - 0.05), rel=1e-12)


def test_skips_params_without_grad_and_state_round_trip():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = mb.optim.AdamW([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and b not in opt.state
    clone = mb.optim.AdamW([a, b], lr=0.1)
    clone.load_state_dict(opt.state_dict())
    assert clone.state[a]["step"] == 1


@pytest.mark.parametrize("kwargs, error", [
    (dict(lr=-1.0), ValueError), (dict(lr=0.1, betas=(1.0, 0.9)), ValueError),
    (dict(lr=0.1, eps=-1.0), ValueError), (dict(lr=0.1, weight_decay=-0.1), ValueError),
    (dict(lr=0.1, correct_bias="yes"), TypeError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        mb.optim.AdamW([torch.nn.Parameter(torch.ones(1))], **kwargs)
