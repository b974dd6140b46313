"""Debiasing losses against hand computations in float64 on random inputs."""
import math

import pytest
import torch

from maskedbert import losses


def _random_case(batch=7, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (batch,), generator=g)
    bias = torch.softmax(torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2, dim=1)
    teacher = torch.softmax(torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2, dim=1)
    return logits, labels, bias, teacher


def _log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _ce_rows(logits, labels):
    return [-_log_softmax_row(row)[y] for row, y in zip(logits.tolist(), labels.tolist())]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_matches_hand_computation(seed):
    logits, labels, _, _ = _random_case(seed=seed)
    expected = sum(_ce_rows(logits, labels)) / len(labels)
    assert losses.cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_product_of_experts_matches_formula(seed):
    logits, labels, bias, _ = _random_case(seed=seed)
    total = 0.0
    for row, brow, y in zip(logits.tolist(), bias.tolist(), labels.tolist()):
        combined = [a + math.log(b) for a, b in zip(_log_softmax_row(row), brow)]
        total += -_log_softmax_row(combined)[y]
    expected = total / len(labels)
    assert losses.product_of_experts(logits, labels, bias).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reweight_matches_formula(seed):
    logits, labels, bias, _ = _random_case(seed=seed)
    ce = _ce_rows(logits, labels)
    weights = [1 - brow[y] for brow, y in zip(bias.tolist(), labels.tolist())]
    expected = sum(w * c for w, c in zip(weights, ce)) / sum(weights)
    assert losses.reweight(logits, labels, bias).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confidence_regularization_matches_formula(seed):
    logits, labels, bias, teacher = _random_case(seed=seed)
    total = 0.0
    for row, brow, trow, y in zip(logits.tolist(), bias.tolist(), teacher.tolist(), labels.tolist()):
        scaled = [t ** (1 - brow[y]) for t in trow]
        target = [s / sum(scaled) for s in scaled]
        total += -sum(t * log_p for t, log_p in zip(target, _log_softmax_row(row)))
    expected = total / len(labels)
    got = losses.confidence_regularization(logits, labels, bias, teacher).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_uniform_bias_reduces_poe_and_reweight_to_cross_entropy():
    logits, labels, _, _ = _random_case(batch=11, classes=2, seed=5)
    uniform = torch.full_like(logits, 0.5)
    ce = losses.cross_entropy(logits, labels)
    assert torch.allclose(losses.product_of_experts(logits, labels, uniform), ce)
    assert torch.allclose(losses.reweight(logits, labels, uniform), ce)


def test_gradients_flow_to_logits_only():
    logits, labels, bias, teacher = _random_case()
    logits.requires_grad_(True)
    bias.requires_grad_(True)
    losses.confidence_regularization(logits, labels, bias, teacher).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert bias.grad is None


def test_anneal_probs_and_alpha_schedule():
    _, _, bias, _ = _random_case()
    alpha = 0.8
    annealed = losses.anneal_probs(bias, alpha)
    expected = bias**alpha / (bias**alpha).sum(dim=1, keepdim=True)
    assert torch.allclose(annealed, expected)
    assert torch.allclose(losses.anneal_probs(bias, 1.0), bias)
    assert losses.annealing_alpha(0, 10, 0.8) == 1.0
    assert losses.annealing_alpha(5, 10, 0.8) == pytest.approx(0.9)
    assert losses.annealing_alpha(10, 10, 0.8) == pytest.approx(0.8)
    assert losses.annealing_alpha(50, 10, 0.8) == pytest.approx(0.8)


def test_batch_loss_anneals_bias_over_training_steps():
    logits, labels, bias, _ = _random_case()
    logits.requires_grad_(True)
    fn = losses.make_loss_fn("poe", anneal_floor=0.5, total_steps=2)
    batch = {"labels": labels, "bias_probs": bias}
    first = fn(logits, batch)
    assert torch.allclose(first, losses.product_of_experts(logits, labels, bias))
    fn(logits, batch)
    third = fn(logits, batch)  # step 2 of 2: alpha at the floor
    assert torch.allclose(third, losses.product_of_experts(logits, labels, losses.anneal_probs(bias, 0.5)))
    assert fn.step == 3


def test_registry_and_aliases():
    assert losses.get_loss("poe") is losses.product_of_experts
    assert losses.get_loss("confidence_regularization") is losses.confidence_regularization
    assert losses.canonical_loss_name("Reweighting") == "reweight"
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get_loss("focal")
    with pytest.raises(ValueError, match="anneal_floor"):
        losses.make_loss_fn("ce", anneal_floor=0.8, total_steps=10)


def test_batch_loss_names_missing_field():
    logits, labels, _, _ = _random_case()
    with pytest.raises(ValueError, match="bias_probs"):
        losses.make_loss_fn("reweight")(logits, {"labels": labels})


def test_bad_inputs_raise_clear_errors():
    logits, labels, bias, teacher = _random_case()
    with pytest.raises(ValueError, match="bias_probs must have the shape"):
        losses.product_of_experts(logits, labels, bias[:, :2])
    with pytest.raises(ValueError, match="sum to 1"):
        losses.reweight(logits, labels, bias * 2)
    with pytest.raises(ValueError, match="non-negative"):
        losses.reweight(logits, labels, bias - 1)
    with pytest.raises(ValueError, match="labels must lie"):
        losses.cross_entropy(logits, labels + 5)
    with pytest.raises(TypeError, match="integer"):
        losses.cross_entropy(logits, labels.double())
    with pytest.raises(ValueError, match="logits must be a 2-D"):
        losses.cross_entropy(logits[0], labels)
    with pytest.raises(ValueError, match="teacher_probs"):
        losses.confidence_regularization(logits, labels, bias, teacher[:3])
