"""Eager masked_linear runs a plan made once per argument layout (MaskedLinear keeps its own): a
call whose layout differs (shapes, dtypes, strides, devices, a replaced Parameter, autocast, the
threshold kind) must get a new plan, so results always match the float64 reference."""
import importlib

import pytest
import torch
from torch import nn

import maskedbert as mb
from maskedbert.kernels import masked_linear, pack_mask

masked_linear_module = importlib.import_module("maskedbert.kernels.masked_linear")

# relative error (norm) allowed against float64, per compute dtype
REL_ERR = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
BACKENDS = ["torch", pytest.param("triton_dense", marks=pytest.mark.triton),
            pytest.param("triton_fused", marks=pytest.mark.triton)]


def _rel_err(got, want):
    diff = (got.double() - want).norm().item()
    scale = want.norm().item()
    return diff / scale if scale > 0 else diff


def _check(name, got, want, dtype):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = _rel_err(got, want)
    assert err <= REL_ERR[dtype], f"{name}: relative error {err:.2e} > {REL_ERR[dtype]:.0e} ({dtype})"


def _reference(x, weight, bias, keep, dy):
    """y, dx, G = dy^T x (the STE product) in float64 from the values the op sees."""
    x64, w64 = x.detach().double(), (weight.detach().double() * keep.double())
    y = x64 @ w64.t() + (0 if bias is None else bias.detach().double())
    dy64 = dy.double().reshape(-1, w64.shape[0])
    g = dy64.t() @ x64.reshape(-1, w64.shape[1])
    return y, (dy64 @ w64).reshape(x.shape), g


def _layer(backend, n=11, k=13, seed=0):
    torch.manual_seed(seed)
    layer = mb.MaskedLinear.from_linear(nn.Linear(k, n), sparsity=0.4, backend=backend)
    with torch.no_grad():
        layer.scores.uniform_(-1, 1)
    return layer


def _run_and_check(layer, x, dtype=torch.float32, what=""):
    """Forward + backward through the layer; y, dx and dS against float64."""
    x = x.detach().requires_grad_(True)
    layer.scores.grad = None
    y = layer(x)
    assert y.dtype == x.dtype
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y.dtype)
    y.backward(dy)
    keep = layer.scores.detach() > layer.threshold_tensor
    # the reference sees what the op computes with: x and W*M in the compute dtype
    w_seen = layer.weight.detach().to(dtype)
    ref_y, ref_dx, g = _reference(x.to(dtype), w_seen, layer.bias, keep, dy)
    _check(f"{what} y", y, ref_y, dtype)
    _check(f"{what} dx", x.grad, ref_dx, dtype)
    _check(f"{what} dscores", layer.scores.grad, g * layer.weight.detach().double(), dtype)
    return y


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_plan_follows_the_input_layout(backend):
    layer = _layer(backend)
    _run_and_check(layer, torch.randn(3, 13), what="2-D")
    first = layer._plan
    _run_and_check(layer, torch.randn(2, 5, 13), what="3-D")  # other token counts: the same plan
    assert layer._plan is first
    _run_and_check(layer, torch.randn(5, 26)[:, ::2], what="strided x")  # x's strides are read per call
    assert layer._plan is first
    dtypes = [torch.float16] if backend == "triton_fused" else [torch.float16, torch.bfloat16]
    for dtype in dtypes:  # a new compute dtype: a new plan (W*M is prepared in it)
        _run_and_check(layer, torch.randn(4, 13).to(dtype), dtype, what=str(dtype))
        assert layer._plan is not first
    _run_and_check(layer, torch.randn(3, 13), what="float32 again")
    with pytest.raises(ValueError, match="in_features=13"):
        layer(torch.randn(3, 12))


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_plan_follows_a_replaced_weight(backend):
    layer = _layer(backend)
    _run_and_check(layer, torch.randn(3, 13), what="first")
    first = layer._plan
    layer.weight = nn.Parameter(torch.randn(11, 13))  # assignment: the plan is dropped
    assert layer._plan is None
    _run_and_check(layer, torch.randn(3, 13), what="assigned weight")
    second = layer._plan
    assert second is not first
    # .data swaps bypass the module: the layout check sees them
    layer.weight.data = torch.randn(13, 11).t()  # same shape, transposed strides
    _run_and_check(layer, torch.randn(3, 13), what="transposed .data")
    assert layer._plan is not second
    layer.weight.data = torch.randn(11, 13).half()
    _run_and_check(layer, torch.randn(3, 13), what="float16 .data")
    layer.weight.data = torch.randn(11, 14)
    with pytest.raises(ValueError, match="x must have last dimension in_features=14"):
        layer(torch.randn(3, 13))
    layer.weight.data = torch.randn(11, 13)
    _run_and_check(layer, torch.randn(3, 13), what="restored")


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_sees_parameters_swapped_in_its_dicts(backend):
    layer = _layer(backend)
    x = torch.randn(4, 13)
    own = layer(x).detach()
    other = torch.randn(11, 13)
    # torch.func.functional_call swaps entries of _parameters without assigning attributes
    swapped = torch.func.functional_call(layer, {"weight": other}, (x,)).detach()
    keep = layer.scores.detach() > layer.threshold_tensor
    _check("swapped", swapped, _reference(x, other, layer.bias, keep, torch.zeros(4, 11))[0], torch.float32)
    torch.testing.assert_close(layer(x).detach(), own, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_plan_follows_dtype_casts_autocast_and_the_threshold(backend):
    layer = _layer(backend)
    x = torch.randn(3, 13)
    _run_and_check(layer, x, what="first")
    layer.threshold = 0.25  # in place: the same plan, the new value
    first = layer._plan
    _run_and_check(layer, x, what="new threshold")
    assert layer._plan is first
    if backend != "triton_fused":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16 and layer._plan is not first
        y = layer(x)
        assert y.dtype == torch.float32
    layer.half()
    _run_and_check(layer, x.half(), torch.float16, what="after .half()")
    assert layer.scores.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_matches_the_training_forward(backend):
    layer = _layer(backend)
    x = torch.randn(2, 3, 13)
    with torch.no_grad():
        y_eval = layer(x)
    torch.testing.assert_close(y_eval, layer(x.requires_grad_(True)).detach(), rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_plans_follow_the_arguments(backend):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 13, generator=gen)
    w = torch.randn(11, 13, generator=gen)
    b = torch.randn(11, generator=gen)
    s = torch.randn(11, 13, generator=gen)
    for tau in (0.1, 0.5, torch.tensor(0.1), torch.tensor([0.5], dtype=torch.float64)):
        y = masked_linear(x, w, b, scores=s, threshold=tau, backend=backend)
        keep = s > float(tau)
        _check(f"threshold {tau!r}", y, _reference(x, w, b, keep, torch.zeros(4, 11))[0], torch.float32)
    # transposed scores and weight: other strides, another plan
    y = masked_linear(x, w.t().contiguous().t(), b, scores=s.t().contiguous().t(), threshold=0.1, backend=backend)
    _check("strided", y, _reference(x, w, b, s > 0.1, torch.zeros(4, 11))[0], torch.float32)
    keep = torch.rand(11, 13, generator=gen) > 0.5
    for mask in (keep, pack_mask(keep)):
        y = masked_linear(x, w, b, mask=mask, backend=backend)
        _check(f"mask {mask.dtype}", y, _reference(x, w, b, keep, torch.zeros(4, 11))[0], torch.float32)
    with pytest.raises(TypeError, match="mask must be bool"):  # checked again: a float mask is refused
        masked_linear(x, w, b, mask=keep.float(), backend=backend)


def test_functional_plan_cache_is_bounded_and_can_be_cleared(monkeypatch):
    monkeypatch.setattr(masked_linear_module, "_MAX_PLANS", 4)
    masked_linear_module.clear_plans()
    w = torch.randn(5, 7)
    s = torch.randn(5, 7)
    for rows in range(1, 4):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            masked_linear(torch.randn(rows, 7).to(dtype), w.to(dtype), scores=s, backend="torch")
    assert 1 <= len(masked_linear_module._PLANS) <= 4
    masked_linear_module.clear_plans()
    assert not masked_linear_module._PLANS


def test_layout_key_names_what_the_plan_depends_on():
    from maskedbert.kernels.masked_linear import layout_key

    x, w, s = torch.randn(3, 6), torch.randn(4, 6), torch.randn(4, 6)
    key = layout_key(x, w, None, s, None, 0.0, "torch")
    assert layout_key(torch.randn(9, 6), w, None, s, None, 0.5, "torch") == key  # token count, threshold value
    others = [
        layout_key(x.half(), w, None, s, None, 0.0, "torch"),
        layout_key(x, w.t().contiguous().t(), None, s, None, 0.0, "torch"),
        layout_key(x, w, torch.randn(4), s, None, 0.0, "torch"),
        layout_key(x, w, None, s.t().contiguous().t(), None, 0.0, "torch"),
        layout_key(x, w, None, s, None, torch.tensor(0.0), "torch"),
        layout_key(x, w, None, s, None, 0.0, "auto"),
        layout_key(x, w, None, s, None, 0.0, "torch", keep_masked_weight=False),
        layout_key(x, nn.Parameter(w), None, s, None, 0.0, "torch"),
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        others.append(layout_key(x, w, None, s, None, 0.0, "torch"))
    assert all(k != key for k in others)
    assert len(set(others)) == len(others)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_planned_layer_can_be_copied_and_saved(backend, tmp_path):
    import copy

    layer = _layer(backend)
    x = torch.randn(3, 13)
    y = layer(x).detach()
    assert layer._plan is not None
    twin = copy.deepcopy(layer)
    assert twin._plan is None and layer._plan is not None
    torch.testing.assert_close(twin(x).detach(), y, rtol=0, atol=0)
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    torch.testing.assert_close(loaded(x).detach(), y, rtol=0, atol=0)
