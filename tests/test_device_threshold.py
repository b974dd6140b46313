"""Device-resident thresholds: masked_linear with a tensor threshold, MaskedLinear's threshold buffer,
and exact_sparsity_ / reset_thresholds_ without a host synchronisation per layer.

On CPU a host synchronisation cannot be observed directly, so `_forbid_host_reads` fails the test on
every Python-level way of reading a tensor's value on the host (bool(), float(), .item(), ...) and on
bool-mask indexing (a hidden nonzero()). The gpu-marked test checks the real thing with
torch.cuda.set_sync_debug_mode("error").
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskedbert import pruning
from maskedbert.kernels import masked_linear
from maskedbert.kernels.topk import num_pruned, topk_masks
from maskedbert.modules import MaskedLinear
from maskedbert.patching import masked_modules

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

TAU = 0.25  # exactly representable in every float dtype, so the number and tensor paths must agree bit for bit
SRN_TAU = 0.01  # SRN's threshold: magnitude init puts every score at 0 or 2 * tau
BACKENDS = ["torch", "triton_dense", "triton_fused"]
SPARSITIES = [0.0, 0.3, 0.5, 0.77, 1.0]


# ---- masked_linear ------------------------------------------------------------------------------
def _leaves(seed: int = 0):
    """x [5, 13], W [7, 13], b [7], S [7, 13], all trained; every fourth score sits exactly at TAU."""
    gen = torch.Generator().manual_seed(seed)
    x, weight, bias, scores = (torch.randn(*shape, generator=gen) for shape in ((5, 13), (7, 13), (7,), (7, 13)))
    scores.view(-1)[::4] = TAU  # at the threshold: pruned (strict >)
    return [t.requires_grad_() for t in (x, weight, bias, scores)]


def _run(threshold, backend: str, seed: int = 0):
    x, weight, bias, scores = _leaves(seed)
    y = masked_linear(x, weight, bias, scores=scores, threshold=threshold, backend=backend)
    y.backward(torch.linspace(-1.0, 1.0, y.numel()).reshape(y.shape))
    return {"y": y.detach(), "x": x.grad, "weight": weight.grad, "bias": bias.grad, "scores": scores.grad}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,dtype", [((), torch.float32), ((1,), torch.float64), ((1, 1), torch.bfloat16)])
def test_tensor_threshold_equals_the_number(backend, shape, dtype):
    threshold = torch.full(shape, TAU, dtype=dtype, requires_grad=True)  # fine: it is detached
    want = _run(TAU, backend)
    got = _run(threshold, backend)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert threshold.grad is None  # the threshold never gets a gradient


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_threshold_is_read_at_every_call(backend):
    threshold = torch.tensor(TAU)
    first = _run(threshold, backend)["y"]
    threshold.fill_(-100.0)  # in place, as exact_sparsity_ writes it: every score is kept now
    assert torch.equal(_run(threshold, backend)["y"], _run(-100.0, backend)["y"])
    assert not torch.equal(first, _run(threshold, backend)["y"])


def test_tensor_threshold_is_ignored_with_a_fixed_mask():
    x, weight, bias, _ = _leaves()
    mask = torch.rand(7, 13, generator=torch.Generator().manual_seed(1)) > 0.5
    want = masked_linear(x, weight, bias, mask=mask, backend="torch")
    got = masked_linear(x, weight, bias, mask=mask, threshold=torch.tensor(TAU), backend="torch")
    assert torch.equal(got, want)


@pytest.mark.parametrize("threshold,exc", [
    (torch.tensor(TAU, device="meta"), ValueError),  # another device than the scores
    (torch.tensor([TAU, TAU]), ValueError),
    (torch.tensor(1), TypeError),
    (torch.tensor(True), TypeError),
], ids=["wrong_device", "two_elements", "int", "bool"])
def test_bad_tensor_threshold_names_the_argument(threshold, exc):
    x, weight, bias, scores = _leaves()
    with pytest.raises(exc, match=r"\bthreshold\b"):
        masked_linear(x, weight, bias, scores=scores, threshold=threshold, backend="torch")


# ---- MaskedLinear's buffer ----------------------------------------------------------------------
def _layer(threshold: float = SRN_TAU, seed: int = 0) -> MaskedLinear:
    torch.manual_seed(seed)
    return MaskedLinear.from_linear(nn.Linear(13, 7), threshold=threshold, sparsity=0.4, backend="torch")


def test_threshold_attribute_reads_a_float_and_writes_the_buffer_in_place():
    layer = _layer()
    buffer = layer.threshold_tensor
    assert buffer.dtype == torch.float32 and buffer.shape == ()
    assert isinstance(layer.threshold, float) and layer.threshold == pytest.approx(SRN_TAU)
    layer.threshold = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    assert layer.threshold == 0.5 and not buffer.requires_grad
    layer.threshold = 3
    assert layer.threshold == 3.0
    assert layer.threshold_tensor is buffer  # written in place: code holding the buffer sees every change
    assert "threshold=3" in repr(layer)
    for bad, exc in (("0.1", TypeError), (True, TypeError), (torch.tensor(1), TypeError),
                     (torch.zeros(2), ValueError)):
        with pytest.raises(exc, match="threshold"):
            layer.threshold = bad


def test_forward_and_mask_follow_the_buffer():
    layer = _layer()
    x = torch.randn(5, 13)
    before = layer(x)
    layer.threshold_tensor.fill_(-100.0)  # keep everything
    assert layer.mask().all()
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    assert not torch.equal(before, layer(x))


def test_state_dict_round_trip_keeps_the_threshold():
    layer = _layer()
    layer.threshold = 0.123
    state = layer.state_dict()
    assert torch.equal(state["threshold_tensor"], torch.tensor(0.123))
    fresh = _layer(seed=1)
    assert fresh.load_state_dict(state) is not None
    assert fresh.threshold == layer.threshold
    assert torch.equal(fresh.mask(), layer.mask())


def test_old_state_dict_without_the_threshold_loads():
    layer = _layer(threshold=0.05)
    old = {k: v for k, v in _layer(seed=1).state_dict().items() if k != "threshold_tensor"}
    result = layer.load_state_dict(old)  # strict
    assert not result.missing_keys and not result.unexpected_keys
    assert layer.threshold == pytest.approx(0.05)  # the constructor's value
    # inside a model, under a prefix, too
    model = nn.Sequential(_layer(threshold=0.07))
    old = {k: v for k, v in nn.Sequential(_layer(seed=2)).state_dict().items() if not k.endswith("threshold_tensor")}
    model.load_state_dict(old)
    assert model[0].threshold == pytest.approx(0.07)


def test_fixed_mode_keeps_no_threshold_in_its_state_dict():
    layer = MaskedLinear.from_linear(nn.Linear(13, 7), mode="fixed", sparsity=0.4)
    assert "threshold_tensor" not in layer.state_dict()
    assert isinstance(layer.threshold, float)


def test_half_keeps_the_threshold_float32():
    layer = _layer(threshold=0.1)
    exact = layer.threshold_tensor.clone()
    for convert in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double(), lambda m: m.float()):
        convert(layer)
        assert layer.threshold_tensor.dtype == torch.float32
        assert torch.equal(layer.threshold_tensor, exact)  # not rounded through the narrower dtype


# ---- exact_sparsity_ / reset_thresholds_ ---------------------------------------------------------
def _model(kind: str, seed: int = 0) -> nn.Module:
    """Three score layers of odd shapes; kind "random" (distinct scores), "tied" (SRN's magnitude init:
    every score 0 or 2*tau) or "few" (four values, ties on both sides of every cut)."""
    torch.manual_seed(seed)
    model = nn.Sequential(*(MaskedLinear.from_linear(nn.Linear(k, n), threshold=SRN_TAU, backend="torch")
                            for k, n in ((13, 7), (7, 11), (11, 5))))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model:
            shape = layer.scores.shape
            if kind == "random":
                layer.scores.copy_(torch.randn(shape, generator=gen))
            elif kind == "tied":
                layer.scores.copy_((torch.rand(shape, generator=gen) < 0.6).float() * 2 * SRN_TAU)
            else:
                layer.scores.copy_(torch.randint(-1, 3, shape, generator=gen).float() * 0.5)
    return model


def _check_exact(model: nn.Module, sparsity: float, scope: str, before: list[torch.Tensor], mean) -> None:
    layers = list(masked_modules(model).values())
    want, _ = topk_masks(before, sparsity, scope=scope)  # the same kept set, ties by lower index
    numels = [s.numel() for s in before]
    for layer, keep, old, n in zip(layers, want, before, numels):
        assert torch.equal(layer.mask(), keep)
        if scope == "layer":
            assert int((~layer.mask()).sum()) == num_pruned(n, sparsity)
        # only kept scores tied with the threshold moved, by one ulp
        moved = layer.scores.detach() != old
        assert torch.equal(moved, keep & (old == layer.threshold_tensor))
        up = torch.nextafter(layer.threshold_tensor, torch.tensor(math.inf))
        assert torch.equal(layer.scores.detach()[moved], up.expand(int(moved.sum())))
    if scope == "global":
        assert sum(int((~layer.mask()).sum()) for layer in layers) == num_pruned(sum(numels), sparsity)
    # the threshold is the largest pruned score (over all layers with scope "global"), or below all scores
    pruned_max = [torch.where(k, -math.inf, s).amax() for k, s in zip(want, before)]
    for i, layer in enumerate(layers):
        pruned_any = num_pruned(sum(numels) if scope == "global" else numels[i], sparsity) > 0
        if not pruned_any:
            assert layer.threshold < float(before[i].min())
        elif scope == "global":
            assert layer.threshold == float(torch.stack(pruned_max).max())
        else:
            assert layer.threshold == float(pruned_max[i])
    assert isinstance(mean, torch.Tensor) and mean.shape == () and mean.dtype == torch.float32
    assert float(mean) == pytest.approx(sum(layer.threshold for layer in layers) / len(layers))


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("kind", ["random", "tied", "few"])
def test_exact_sparsity_is_exact(scope, kind):
    model = _model(kind)
    for sparsity in SPARSITIES:
        before = [layer.scores.detach().clone() for layer in model]
        mean = pruning.exact_sparsity_(model, sparsity, scope)
        _check_exact(model, sparsity, scope, before, mean)
        # a second call finds nothing to fix: the same mask, the same scores, the same thresholds
        after = [layer.scores.detach().clone() for layer in model]
        thresholds = [layer.threshold for layer in model]
        pruning.exact_sparsity_(model, sparsity, scope)
        assert all(torch.equal(layer.scores.detach(), a) for layer, a in zip(model, after))
        assert [layer.threshold for layer in model] == thresholds


def test_exact_sparsity_on_half_scores():
    model = _model("tied").half()  # scores fp16: ties need an fp16 ulp, the threshold stays fp32
    for scope in ("layer", "global"):
        pruning.exact_sparsity_(model, 0.55, scope)
        pruned = [int((~layer.mask()).sum()) for layer in model]
        numels = [layer.scores.numel() for layer in model]
        if scope == "layer":
            assert pruned == [num_pruned(n, 0.55) for n in numels]
        else:
            assert sum(pruned) == num_pruned(sum(numels), 0.55)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_reset_thresholds_returns_a_tensor_and_keeps_the_guard(scope):
    model = _model("random")
    mean = pruning.reset_thresholds_(model, 0.6, scope)
    assert isinstance(mean, torch.Tensor) and mean.shape == ()
    flats = [layer.scores.detach().reshape(-1) for layer in model]
    if scope == "global":
        everything = torch.cat(flats)
        want = [float(everything.kthvalue(int(everything.numel() * 0.6)).values)] * len(flats)
    else:
        want = [float(f.kthvalue(int(f.numel() * 0.6)).values) for f in flats]
    assert [layer.threshold for layer in model] == want
    assert float(mean) == pytest.approx(sum(want) / len(want))
    # every kept score tied at 2*tau: the k-th value at 0.8 is the largest score, so the guard keeps tau
    tied = _model("tied")
    pruning.reset_thresholds_(tied, 0.8, scope)
    assert all(layer.threshold == pytest.approx(SRN_TAU) for layer in tied)


def _forbid_host_reads(monkeypatch) -> dict:
    """While `armed["on"]`, fail on Python-level reads of tensor values on the host and on bool-mask
    indexing; both synchronise with a CUDA device. (C++-internal syncs need the gpu test below.)"""
    armed = {"on": False}

    def guarded(name, original, check_index=False):
        def guard(self, *args, **kwargs):
            if armed["on"] and (not check_index or _bool_index(args[0])):
                raise AssertionError(f"Tensor.{name} would synchronise with the device")
            return original(self, *args, **kwargs)
        return guard

    for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, guarded(name, getattr(torch.Tensor, name)))
    for name in ("__getitem__", "__setitem__"):
        monkeypatch.setattr(torch.Tensor, name, guarded(name, getattr(torch.Tensor, name), check_index=True))
    return armed


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_no_host_reads_after_topk(monkeypatch, scope):
    model = _model("tied")
    armed = _forbid_host_reads(monkeypatch)
    topk = pruning.topk_masks
    topk_calls = []

    def topk_then_arm(*args, **kwargs):  # top-k's own NaN check is its one allowed synchronisation
        result = topk(*args, **kwargs)
        topk_calls.append(sparsity)
        armed["on"] = True
        return result

    monkeypatch.setattr(pruning.sparsity, "topk_masks", topk_then_arm)
    for sparsity in SPARSITIES:
        try:
            pruning.exact_sparsity_(model, sparsity, scope)
        finally:
            armed["on"] = False
        assert sparsity in topk_calls, "exact_sparsity_ no longer goes through topk_masks: the guard never armed"
    armed["on"] = True
    try:
        pruning.reset_thresholds_(model, 0.5, scope)
        x = torch.randn(4, 13, requires_grad=True)
        model(x).backward(torch.ones(4, 5))  # the forward reads the buffer, not the float
    finally:
        armed["on"] = False


@pytest.mark.gpu
def test_exact_sparsity_and_forward_do_not_synchronize_on_cuda(monkeypatch, cuda_device):
    model = _model("tied").to(cuda_device)
    for layer in model:
        layer.backend = "auto"  # the Triton kernels
    x = torch.randn(64, 13, device=cuda_device, requires_grad=True)
    for scope in ("layer", "global"):  # warm up: Triton compiles and autotunes, cuBLAS and allocator init
        pruning.exact_sparsity_(model, 0.6, scope)
    model(x).sum().backward()
    torch.cuda.synchronize()
    topk = pruning.topk_masks

    def topk_then_forbid_syncs(*args, **kwargs):  # top-k's own NaN check is its one allowed synchronisation
        result = topk(*args, **kwargs)
        torch.cuda.set_sync_debug_mode("error")
        return result

    monkeypatch.setattr(pruning.sparsity, "topk_masks", topk_then_forbid_syncs)
    try:
        for scope in ("layer", "global"):
            pruning.exact_sparsity_(model, 0.6, scope)
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.set_sync_debug_mode("error")
        model(x).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    numels = [layer.scores.numel() for layer in model]
    assert sum(int((~layer.mask()).sum()) for layer in model) == num_pruned(sum(numels), 0.6)
