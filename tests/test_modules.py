"""MaskedLinear and MaskConfig: construction, masks, score inits, gradients, export, JSON round trip."""
import json
import math

import pytest
import torch
from torch import nn

from maskedbert.config import MaskConfig
from maskedbert.modules import MaskedLinear, keep_largest

THRESHOLDS = [1e-2, 0.0, -0.5]


def _linear(n=11, k=13, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias)


def _reference(x, layer, mask):
    w = layer.weight.detach().double() * mask.double()
    b = None if layer.bias is None else layer.bias.detach().double()
    return nn.functional.linear(x.double(), w, b)


# ---- construction and export -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["scores", "fixed"])
def test_from_linear_wraps_the_same_parameters_without_copy(mode):
    lin = _linear()
    layer = MaskedLinear.from_linear(lin, MaskConfig(mode=mode))
    assert layer.weight is lin.weight and layer.bias is lin.bias
    assert layer.weight.data_ptr() == lin.weight.data_ptr()
    assert (layer.scores is None) == (mode == "fixed")
    assert (layer.packed_mask is None) == (mode == "scores")
    if mode == "fixed":
        assert layer.packed_mask.dtype == torch.uint8 and layer.packed_mask.shape == (11, 2)
    else:
        assert layer.scores.dtype == torch.float32 and layer.scores.shape == lin.weight.shape


@pytest.mark.parametrize("mode", ["scores", "fixed"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_round_trip_to_linear_gives_masked_weight_and_same_outputs(mode, sparsity):
    lin = _linear(bias=True)
    original = lin.weight.detach().clone()
    layer = MaskedLinear.from_linear(lin, mode=mode, sparsity=sparsity)
    x = torch.randn(3, 5, 13)
    y_masked = layer(x)
    plain = layer.to_linear()
    assert type(plain) is nn.Linear
    assert plain.bias is lin.bias
    mask = layer.mask()
    torch.testing.assert_close(plain.weight.detach(), original * mask)
    assert int((plain.weight == 0).sum()) == round(sparsity * original.numel())
    torch.testing.assert_close(plain(x), y_masked)
    torch.testing.assert_close(y_masked.double(), _reference(x, lin, mask), atol=1e-5, rtol=1e-5)
    # the original weight is left untouched (masking is a view of it, not an edit)
    torch.testing.assert_close(lin.weight.detach(), original)


def test_to_linear_restores_requires_grad_flags():
    lin = _linear()
    layer = MaskedLinear.from_linear(lin)  # mode "scores": weights frozen by default
    assert not lin.weight.requires_grad and not lin.bias.requires_grad
    plain = layer.to_linear()
    assert plain.weight.requires_grad and plain.bias.requires_grad


def test_train_weights_sets_requires_grad_on_the_callers_parameter():
    lin = _linear()
    MaskedLinear.from_linear(lin, train_weights=True)
    assert lin.weight.requires_grad
    lin2 = _linear()
    MaskedLinear.from_linear(lin2, mode="fixed")  # fixed mode trains weights by default (IMP)
    assert lin2.weight.requires_grad
    lin3 = _linear()
    MaskedLinear.from_linear(lin3, mode="fixed", train_weights=False)
    assert not lin3.weight.requires_grad


def test_layer_without_bias():
    lin = _linear(bias=False)
    layer = MaskedLinear.from_linear(lin, sparsity=0.3)
    x = torch.randn(4, 13)
    torch.testing.assert_close(layer(x).double(), _reference(x, lin, layer.mask()))
    assert layer.to_linear().bias is None


# ---- masks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["scores", "fixed"])
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_set_mask_reproduces_the_mask(mode, threshold):
    layer = MaskedLinear.from_linear(_linear(), mode=mode, threshold=threshold)
    scores_param = layer.scores
    torch.manual_seed(1)
    wanted = torch.rand(11, 13) < 0.4
    layer.set_mask_(wanted)
    assert torch.equal(layer.mask(), wanted)
    assert layer.scores is scores_param  # rewritten in place: optimizers keep their reference
    assert layer.sparsity == pytest.approx(1 - wanted.float().mean().item())
    x = torch.randn(2, 13)
    torch.testing.assert_close(layer(x).double(), _reference(x, layer, wanted), atol=1e-5, rtol=1e-5)


def test_scores_mode_mask_is_strict_and_prunes_nan():
    layer = MaskedLinear.from_linear(_linear(2, 3), threshold=0.5)
    with torch.no_grad():
        layer.scores.copy_(torch.tensor([[0.5, 0.50001, float("nan")], [1.0, -1.0, float("inf")]]))
    assert layer.mask().tolist() == [[False, True, False], [True, False, True]]


def test_magnitude_init_keeps_exactly_the_largest_weights():
    lin = _linear(16, 24)
    layer = MaskedLinear.from_linear(lin, score_init="magnitude", sparsity=0.25, threshold=0.01)
    mask = layer.mask()
    assert int((~mask).sum()) == round(0.25 * 16 * 24)
    mags = lin.weight.detach().abs()
    assert mags[mask].min() >= mags[~mask].max()
    # SRNet values: 2*tau for kept, 0 for pruned
    assert layer.scores.detach().unique().tolist() == pytest.approx([0.0, 0.02])


def test_other_score_inits():
    lin = _linear(64, 64)
    soft = MaskedLinear.from_linear(lin, score_init="magnitude_soft")
    torch.testing.assert_close(soft.scores.detach(), lin.weight.detach().abs())
    constant = MaskedLinear.from_linear(lin, score_init="constant")
    assert constant.sparsity == 0.0
    torch.manual_seed(0)
    uniform = MaskedLinear.from_linear(lin, score_init="uniform", sparsity=0.3, threshold=0.01)
    assert uniform.sparsity == pytest.approx(0.3, abs=0.04)
    assert uniform.scores.min() >= 0.01 - 0.3 * 0.02 and uniform.scores.max() <= 0.01 + 0.7 * 0.02
    kaiming = MaskedLinear.from_linear(lin, score_init="kaiming")
    bound = 1 / math.sqrt(64)
    assert kaiming.scores.abs().max() <= bound and kaiming.scores.std() > bound / 4


def test_keep_largest_breaks_ties_exactly():
    values = torch.zeros(7, 9)
    values[0, :3] = 1.0
    keep = keep_largest(values, 0.5)
    assert int((~keep).sum()) == round(0.5 * 63)
    assert keep[0, :3].all()
    assert torch.equal(keep, keep_largest(values, 0.5))  # deterministic
    assert keep_largest(values, 0.0).all() and not keep_largest(values, 1.0).any()


# ---- gradients ---------------------------------------------------------------------------------

def test_scores_mode_gradients_reach_scores_only_with_the_ste_value():
    lin = _linear()
    layer = MaskedLinear.from_linear(lin, sparsity=0.5)
    x = torch.randn(6, 13)
    dy = torch.randn(6, 11)
    layer(x).backward(dy)
    assert lin.weight.grad is None and lin.bias.grad is None
    torch.testing.assert_close(layer.scores.grad, (dy.t() @ x) * lin.weight.detach())


def test_fixed_mode_gradients_reach_weights_only():
    lin = _linear()
    layer = MaskedLinear.from_linear(lin, mode="fixed", sparsity=0.5)
    x = torch.randn(6, 13)
    dy = torch.randn(6, 11)
    layer(x).backward(dy)
    mask = layer.mask()
    torch.testing.assert_close(lin.weight.grad, (dy.t() @ x) * mask)
    torch.testing.assert_close(lin.bias.grad, dy.sum(0))
    assert [name for name, p in layer.named_parameters()] == ["weight", "bias"]


@pytest.mark.triton
def test_triton_backend_matches_torch_backend():
    lin = _linear(9, 21)
    layer = MaskedLinear.from_linear(lin, sparsity=0.5, backend="triton_fused")
    x = torch.randn(5, 21)
    y = layer(x)
    layer.backend = "torch"
    torch.testing.assert_close(y, layer(x), atol=1e-5, rtol=1e-5)


def test_state_dict_holds_scores_or_packed_mask():
    # mode "scores" also keeps its threshold (set by pruning during training); "fixed" has no use for it
    assert set(MaskedLinear.from_linear(_linear()).state_dict()) == {"weight", "bias", "scores", "threshold_tensor"}
    assert set(MaskedLinear.from_linear(_linear(), mode="fixed").state_dict()) == {"weight", "bias", "packed_mask"}


def test_extra_repr_names_the_settings():
    text = repr(MaskedLinear.from_linear(_linear(), sparsity=0.5, threshold=0.02))
    for part in ("in_features=13", "out_features=11", "mode=scores", "threshold=0.02", "sparsity=0.50"):
        assert part in text


# ---- errors ------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        MaskedLinear.from_linear(nn.Conv1d(2, 3, 1))
    layer = MaskedLinear.from_linear(_linear())
    with pytest.raises(TypeError, match="already a MaskedLinear"):
        MaskedLinear.from_linear(layer)
    with pytest.raises(TypeError, match="config must be a MaskConfig"):
        MaskedLinear.from_linear(_linear(), {"mode": "scores"})
    with pytest.raises(TypeError, match="unknown MaskConfig field"):
        MaskedLinear.from_linear(_linear(), sparsty=0.5)
    with pytest.raises(ValueError, match="mask must have shape"):
        layer.set_mask_(torch.ones(13, 11, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        layer.set_mask_(torch.ones(11, 13))
    with pytest.raises(TypeError, match="weight must be a 2-D nn.Parameter"):
        MaskedLinear(torch.zeros(3, 4))


@pytest.mark.parametrize("kwargs, field", [
    ({"mode": "soft"}, "mode"),
    ({"score_init": "random"}, "score_init"),
    ({"scope": "model"}, "scope"),
    ({"backend": "cuda"}, "backend"),
    ({"sparsity": 1.5}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": "0.1"}, "threshold"),
    ({"mask_classifier": 1}, "mask_classifier"),
    ({"train_weights": "yes"}, "train_weights"),
    ({"target_modules": []}, "target_modules"),
    ({"target_modules": ["query", ""]}, "target_modules"),
    ({"target_modules": "(unclosed"}, "target_modules"),
    ({"target_modules": 3}, "target_modules"),
    ({"exclude_modules": "all-linear"}, "exclude_modules"),
    ({"mode": "fixed", "score_init": "kaiming"}, "score_init"),
    ({"score_init": "kaiming", "sparsity": 0.5}, "sparsity"),
    ({"scope": "global", "score_init": "uniform"}, "scope"),
])
def test_mask_config_validation_names_the_field(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=f"MaskConfig.{field}"):
        MaskConfig(**kwargs)


# ---- MaskConfig JSON ---------------------------------------------------------------------------

def test_mask_config_json_round_trip(tmp_path):
    config = MaskConfig(target_modules=["query", "key"], exclude_modules=r".*layer\.0\..*", mode="fixed",
                        sparsity=0.3, scope="global", mask_classifier=True, threshold=0.05, backend="torch")
    assert MaskConfig.from_json(config.to_json()) == config
    path = tmp_path / "sub" / "mask_config.json"
    config.save(path)
    assert MaskConfig.load(path) == config
    assert json.loads(path.read_text())["sparsity"] == 0.3
    assert [p.name for p in path.parent.iterdir()] == ["mask_config.json"]  # no temp file left behind


def test_mask_config_json_errors():
    with pytest.raises(ValueError, match=r"unknown MaskConfig field\(s\) \['sparsty'\]"):
        MaskConfig.from_json('{"sparsty": 0.5}')
    with pytest.raises(ValueError, match="not valid JSON"):
        MaskConfig.from_json("{")
    with pytest.raises(TypeError, match="expects a dict"):
        MaskConfig.from_json("[1, 2]")


def test_weights_train_resolves_mode_default():
    assert MaskConfig().weights_train is False
    assert MaskConfig(mode="fixed").weights_train is True
    assert MaskConfig(train_weights=True).weights_train is True
