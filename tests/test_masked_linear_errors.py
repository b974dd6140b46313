"""Bad input to masked_linear: a ValueError/TypeError that names the argument and what was expected."""
from __future__ import annotations

import pytest
import torch

from maskedbert.kernels import masked_linear
from maskedbert.kernels._runtime import check_triton_tensors

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

N, K = 3, 10  # packed masks need ceil(10/8) = 2 bytes per row


def good_args() -> dict:
    return {
        "x": torch.randn(4, K),
        "weight": torch.randn(N, K),
        "bias": torch.randn(N),
        "scores": torch.randn(N, K),
        "mask": None,
        "threshold": 0.0,
        "backend": "torch",
    }


def call(**overrides):
    args = good_args()
    args.update(overrides)
    x, weight, bias = args.pop("x"), args.pop("weight"), args.pop("bias")
    return masked_linear(x, weight, bias, **args)


# (id, overrides, exception, regex the message must match: the argument's name and what was expected)
BAD_INPUTS = [
    ("x_last_dim", {"x": torch.randn(4, K + 1)}, ValueError, r"\bx\b.*in_features=10"),
    ("x_scalar", {"x": torch.tensor(1.0)}, ValueError, r"\bx\b"),
    ("bias_length", {"bias": torch.randn(N + 1)}, ValueError, r"\bbias\b.*\(3,\)"),
    ("bias_2d", {"bias": torch.randn(1, N)}, ValueError, r"\bbias\b"),
    ("scores_shape", {"scores": torch.randn(N, K - 1)}, ValueError, r"\bscores\b.*\(3, 10\)"),
    ("scores_transposed", {"scores": torch.randn(K, N)}, ValueError, r"\bscores\b"),
    ("bool_mask_shape", {"scores": None, "mask": torch.ones(N, K + 1, dtype=torch.bool)}, ValueError,
     r"\bmask\b.*\(3, 10\)"),
    ("packed_mask_width", {"scores": None, "mask": torch.zeros(N, 1, dtype=torch.uint8)}, ValueError,
     r"\bmask\b.*\(3, 2\)"),
    ("packed_mask_rows", {"scores": None, "mask": torch.zeros(N + 1, 2, dtype=torch.uint8)}, ValueError,
     r"\bmask\b"),
    ("scores_and_mask", {"mask": torch.ones(N, K, dtype=torch.bool)}, ValueError, r"scores.*mask.*both"),
    ("neither_scores_nor_mask", {"scores": None}, ValueError, r"scores.*mask.*neither"),
    ("int_weight", {"weight": torch.ones(N, K, dtype=torch.int32)}, TypeError, r"\bweight\b.*float"),
    ("float64_weight", {"weight": torch.randn(N, K, dtype=torch.float64)}, TypeError, r"\bweight\b"),
    ("int_x", {"x": torch.ones(4, K, dtype=torch.int64)}, TypeError, r"\bx\b.*float"),
    ("list_x", {"x": [[0.0] * K]}, TypeError, r"\bx\b"),
    ("int_bias", {"bias": torch.ones(N, dtype=torch.int32)}, TypeError, r"\bbias\b"),
    ("fp16_scores", {"scores": torch.randn(N, K).half()}, TypeError, r"\bscores\b.*float32"),
    ("bf16_scores", {"scores": torch.randn(N, K).bfloat16()}, TypeError, r"\bscores\b.*float32"),
    ("float_mask", {"scores": None, "mask": torch.ones(N, K)}, TypeError, r"\bmask\b.*(bool|uint8)"),
    ("int32_mask", {"scores": None, "mask": torch.ones(N, 2, dtype=torch.int32)}, TypeError, r"\bmask\b"),
    ("weight_1d", {"weight": torch.randn(K), "scores": torch.randn(K)}, ValueError, r"\bweight\b.*2-D"),
    ("unknown_backend", {"backend": "cuda"}, ValueError, r"\bbackend\b.*triton_fused"),
    ("backend_typo", {"backend": "Triton"}, ValueError, r"\bbackend\b"),
    ("threshold_string", {"threshold": "0.5"}, TypeError, r"\bthreshold\b"),
    ("threshold_vector", {"threshold": torch.tensor([0.1, 0.2])}, ValueError, r"\bthreshold\b"),
]


@pytest.mark.parametrize("overrides,exc,pattern", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_the_argument(overrides, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(**overrides)


def test_good_args_are_accepted():
    # the table above only means something if the unmodified call succeeds
    assert call().shape == (4, N)
    assert call(scores=None, mask=torch.ones(N, K, dtype=torch.bool)).shape == (4, N)
    assert call(scores=None, mask=torch.zeros(N, 2, dtype=torch.uint8)).shape == (4, N)
    assert call(threshold=torch.tensor(0.5)).shape == (4, N)


@pytest.mark.parametrize("which", ["x", "weight", "bias", "scores", "mask"])
def test_tensors_on_different_devices(which):
    # the meta device stands in for a second device: the check must fire before any computation
    args = good_args()
    if which == "mask":
        args["scores"] = None
        args["mask"] = torch.ones(N, K, dtype=torch.bool)
    args[which] = args[which].to("meta")
    with pytest.raises(ValueError, match=rf"device.*{which} on meta"):
        call(**args)


@pytest.mark.parametrize("backend", ["triton", "triton_dense", "triton_fused"])
def test_triton_backend_on_cpu_without_interpreter_raises(monkeypatch, backend):
    # kernels were decorated in interpreter mode (conftest); the launch-time check reads the variable
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match=r"weight.*cpu.*TRITON_INTERPRET=1"):
        check_triton_tensors(weight=torch.randn(2, 2), scores=None)
    with pytest.raises(RuntimeError, match="CUDA"):
        call(backend=backend)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="CUDA"):
        call(backend=backend)


def test_check_triton_tensors_accepts_interpreter_and_none(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    check_triton_tensors(x=torch.randn(2), bias=None)  # no error


def test_auto_backend_on_cpu_never_needs_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert call(backend="auto").shape == (4, N)
