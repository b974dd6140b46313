"""masked_linear against a float64 reference: outputs and every gradient, every backend, odd shapes.

    M = S > tau (strict, NaN pruned); y = x (W*M)^T + b; dx = dy (W*M); dS = (dy^T x) * W (STE);
    dW = (dy^T x) * M (only when W trains); db = sum(dy)

Tolerance rule (DESIGN.md, flash-attention's): each result's relative Frobenius error against the
float64 reference stays under a per-dtype bound, and under twice the error of the same math done by
eager PyTorch in the same dtype plus a small slack. On CPU the Triton paths run under
TRITON_INTERPRET=1 (tests/conftest.py), where fp32->bf16 casts truncate: the bf16 slack allows that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import torch
import torch.nn.functional as F

from maskedbert.kernels import masked_linear, pack_mask
from maskedbert.kernels.mask_prep import unpack_bits_torch

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

BACKENDS = ["torch", "triton_dense", "triton_fused"]
TRITON_BACKENDS = ["triton_dense", "triton_fused"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# dtype -> (bound on relative Frobenius error vs float64, slack added to 2x the eager error)
TOLERANCES = {
    torch.float32: (1e-5, 1e-6),
    torch.float16: (5e-3, 5e-4),
    # the interpreter truncates fp32->bf16 casts: one cast alone can then be off by 2^-8 relative,
    # where eager's round-to-nearest-even can be nearly exact (seen: M=N=1, K=9)
    torch.bfloat16: (2e-2, 6e-3 if os.environ.get("TRITON_INTERPRET") == "1" else 3e-3),
}
# dS is accumulated in fp32 from the (rounded) inputs whatever the activation dtype
FP32_ACCUMULATED = {"scores"}
GRAD_NAMES = ("x", "weight", "bias", "scores")


@dataclass
class Case:
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    scores: torch.Tensor | None
    mask: torch.Tensor | None
    threshold: float

    def keep(self) -> torch.Tensor:
        if self.scores is not None:
            return self.scores.detach() > self.threshold
        if self.mask.dtype == torch.bool:
            return self.mask
        return unpack_bits_torch(self.mask, self.weight.shape[1])

    def leaves(self) -> dict[str, torch.Tensor]:
        named = {"x": self.x, "weight": self.weight, "bias": self.bias, "scores": self.scores}
        return {k: v for k, v in named.items() if v is not None and v.requires_grad}


def make_case(
    lead: tuple[int, ...], N: int, K: int, dtype: torch.dtype = torch.float32, *,
    source: str = "scores", bias: bool = True, train_weight: bool = False, train_scores: bool = True,
    threshold: float = 0.1, seed: int = 0, device: str = "cpu",
) -> Case:
    """Fresh random leaves. source: "scores", "bool" or "packed" (a fixed mask)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, dt=dtype, grad=True):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dt).requires_grad_(grad)

    x = rand(*lead, K)
    weight = rand(N, K, grad=train_weight)
    b = rand(N)  # drawn either way so that bias=False leaves the other tensors unchanged
    b = b if bias else None
    scores = mask = None
    if source == "scores":
        scores = rand(N, K, dt=torch.float32, grad=train_scores)
    else:
        keep = torch.rand(N, K, generator=gen) > 0.4
        mask = (keep if source == "bool" else pack_mask(keep)).to(device)
    return Case(x, weight, b, scores, mask, threshold)


def reference64(case: Case, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    """The op's math by hand in float64 from the same (already rounded) inputs."""
    N, K = case.weight.shape
    keep = case.keep().double()
    x2 = case.x.detach().double().reshape(-1, K)
    w = case.weight.detach().double()
    wm = w * keep
    dy2 = dy.double().reshape(-1, N)
    y = x2 @ wm.t()
    if case.bias is not None:
        y = y + case.bias.detach().double()
    g = dy2.t() @ x2
    return {
        "y": y.reshape(*case.x.shape[:-1], N),
        "x": (dy2 @ wm).reshape(case.x.shape),
        "scores": g * w,
        "weight": g * keep,
        "bias": dy2.sum(0),
    }


def eager_same_dtype(case: Case, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same math in the op's dtype with plain PyTorch ops: the baseline for the 2x rule."""
    N, K = case.weight.shape
    dtype = case.x.dtype
    keep = case.keep()
    x2 = case.x.detach().reshape(-1, K)
    w = case.weight.detach()
    wm = torch.where(keep, w, torch.zeros((), dtype=w.dtype)).to(dtype)
    dy2 = dy.reshape(-1, N).to(dtype)
    bias = None if case.bias is None else case.bias.detach().to(dtype)
    g = dy2.t() @ x2
    return {
        "y": F.linear(x2, wm, bias).reshape(*case.x.shape[:-1], N),
        "x": (dy2 @ wm).reshape(case.x.shape),
        "scores": g.float() * w.float(),
        "weight": torch.where(keep, g, torch.zeros((), dtype=g.dtype)).to(w.dtype),
        "bias": dy2.sum(0),
    }


def run_op(case: Case, dy: torch.Tensor, backend: str, **kwargs) -> dict[str, torch.Tensor]:
    """Forward + backward with dy on fresh .grad fields; returns y and the gradients that exist."""
    for t in case.leaves().values():
        t.grad = None
    y = masked_linear(case.x, case.weight, case.bias, scores=case.scores, threshold=case.threshold,
                      mask=case.mask, backend=backend, **kwargs)
    y.backward(dy)
    out = {"y": y.detach()}
    out.update({name: t.grad for name, t in case.leaves().items()})
    return out


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = (got.double() - want.double()).norm().item()
    scale = want.double().norm().item()
    return diff / scale if scale > 0 else diff


def assert_matches_reference(got, case, dy, dtype, what=""):
    ref = reference64(case, dy)
    eager = eager_same_dtype(case, dy)
    for name, value in got.items():
        bound, slack = TOLERANCES[dtype]
        assert value is not None, f"{what}: missing gradient {name}"
        assert value.shape == ref[name].shape, f"{what}: {name} has shape {tuple(value.shape)}"
        assert torch.isfinite(value).all(), f"{what}: {name} has non-finite values"
        err = rel_err(value, ref[name])
        eager_err = rel_err(eager[name], ref[name])
        if name in FP32_ACCUMULATED:
            bound = min(bound, TOLERANCES[torch.float32][0])
        assert err < bound, f"{what}: {name} relative error {err:.3g} >= {bound:.1g} ({dtype})"
        assert err <= 2 * eager_err + slack, (
            f"{what}: {name} relative error {err:.3g} > 2 x eager {eager_err:.3g} + {slack:.1g} ({dtype})"
        )


def expected_grad_dtypes(case: Case) -> dict[str, torch.dtype]:
    return {name: t.dtype for name, t in case.leaves().items()}


# (leading dims of x, N, K): M = 1; 3-D and 4-D x; nothing a multiple of 16/32/64
SHAPES = [((1,), 1, 9), ((2, 3), 20, 37), ((2, 1, 3), 33, 17)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, (*s[0], s[1], s[2]))))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_matches_float64_reference(backend, dtype, shape):
    lead, N, K = shape
    case_seed = hash((lead, N, K)) % 997
    case = make_case(lead, N, K, dtype, seed=case_seed)
    dy = torch.randn(*lead, N, generator=torch.Generator().manual_seed(case_seed + 1)).to(dtype)
    got = run_op(case, dy, backend)
    assert got["y"].dtype == dtype
    assert {k: v.dtype for k, v in got.items() if k != "y"} == expected_grad_dtypes(case)
    assert set(got) == {"y", "x", "bias", "scores"}  # W frozen: no weight gradient
    assert case.weight.grad is None
    assert_matches_reference(got, case, dy, dtype, f"{backend} {dtype} {shape}")


@pytest.mark.parametrize("backend,dtype", [pytest.param("triton_fused", torch.float32, marks=pytest.mark.slow),
                                           ("triton_dense", torch.bfloat16)])
def test_odd_shape_5x7x123(backend, dtype):
    # the 5x123x123-style odd shape: 35 tokens, N = K = 123 (not a multiple of any tile size)
    case = make_case((5, 7), 123, 123, dtype, train_weight=True, seed=11)
    dy = torch.randn(5, 7, 123, dtype=dtype)
    got = run_op(case, dy, backend)
    assert set(got) == {"y", "x", "weight", "bias", "scores"}
    assert_matches_reference(got, case, dy, dtype, f"{backend} 5x7x123")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", ["bool", "packed"])
def test_fixed_mask_trains_weight(backend, source):
    # IMP: a fixed mask and a trained W; dW = (dy^T x) * M
    case = make_case((3, 5), 19, 29, source=source, train_weight=True, seed=3)
    dy = torch.randn(3, 5, 19)
    got = run_op(case, dy, backend)
    assert set(got) == {"y", "x", "weight", "bias"}
    assert (got["weight"][~case.keep()] == 0).all(), "pruned weights must get zero gradient"
    assert_matches_reference(got, case, dy, torch.float32, f"{backend} {source}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_frozen_vs_trainable(backend):
    frozen = make_case((4,), 10, 13, seed=5)
    trained = make_case((4,), 10, 13, train_weight=True, seed=5)
    dy = torch.randn(4, 10)
    got_frozen = run_op(frozen, dy, backend)
    got_trained = run_op(trained, dy, backend)
    assert frozen.weight.grad is None and "weight" not in got_frozen
    assert_matches_reference(got_trained, trained, dy, torch.float32, backend)
    # training W must not change anything else
    for name in ("y", "x", "bias", "scores"):
        torch.testing.assert_close(got_trained[name], got_frozen[name], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_some_inputs_need_grad(backend):
    # x frozen (first layer), scores trained; then scores frozen, only x trained
    case = make_case((6,), 8, 11, seed=6)
    case.x.requires_grad_(False)
    case.bias.requires_grad_(False)
    dy = torch.randn(6, 8)
    got = run_op(case, dy, backend)
    assert set(got) == {"y", "scores"}
    assert_matches_reference(got, case, dy, torch.float32, backend)
    case = make_case((6,), 8, 11, train_scores=False, bias=False, seed=6)
    got = run_op(case, dy, backend)
    assert set(got) == {"y", "x"} and case.scores.grad is None
    assert_matches_reference(got, case, dy, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_none_vs_given(backend):
    with_bias = make_case((2, 3), 12, 10, seed=7)
    no_bias = make_case((2, 3), 12, 10, bias=False, seed=7)
    dy = torch.randn(2, 3, 12)
    got_b = run_op(with_bias, dy, backend)
    got_nb = run_op(no_bias, dy, backend)
    assert "bias" not in got_nb
    assert_matches_reference(got_nb, no_bias, dy, torch.float32, backend)
    torch.testing.assert_close(got_b["y"] - with_bias.bias.detach(), got_nb["y"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_b["bias"], dy.sum((0, 1)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bool_and_packed_mask_identical(backend):
    bool_case = make_case((7,), 14, 21, source="bool", train_weight=True, seed=8)
    packed = pack_mask(bool_case.mask)
    packed_case = Case(bool_case.x, bool_case.weight, bool_case.bias, None, packed, 0.0)
    # the same mask given as scores: kept where score 1 > 0.5
    score_case = Case(bool_case.x, bool_case.weight, bool_case.bias,
                      bool_case.mask.float().requires_grad_(), None, 0.5)
    dy = torch.randn(7, 14)
    a = run_op(bool_case, dy, backend)
    b = run_op(packed_case, dy, backend)
    c = run_op(score_case, dy, backend)
    for name in ("y", "x", "weight", "bias"):
        assert torch.equal(a[name], b[name]), f"{name}: bool and packed masks differ"
        assert torch.equal(a[name], c[name]), f"{name}: bool mask and equivalent scores differ"


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_pruned_and_all_kept(backend):
    dy = torch.randn(5, 9)
    # all pruned: y is the bias exactly, dx and dW are zero, but dS = (dy^T x) * W still flows (STE)
    case = make_case((5,), 9, 12, train_weight=True, seed=9)
    case.scores.data.fill_(-1.0)
    got = run_op(case, dy, backend)
    assert torch.equal(got["y"], case.bias.detach().expand(5, 9))
    assert (got["x"] == 0).all() and (got["weight"] == 0).all()
    assert got["scores"].abs().sum() > 0
    assert_matches_reference({"scores": got["scores"], "bias": got["bias"]}, case, dy, torch.float32, backend)
    # all kept: the dense linear layer
    case = make_case((5,), 9, 12, train_weight=True, seed=9)
    case.scores.data.fill_(1.0)
    got = run_op(case, dy, backend)
    dense = F.linear(case.x.detach(), case.weight.detach(), case.bias.detach())
    torch.testing.assert_close(got["y"], dense, atol=1e-5, rtol=1e-5)
    assert_matches_reference(got, case, dy, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_at_threshold_are_pruned(backend):
    case = make_case((3,), 4, 10, threshold=0.5, seed=10)
    pattern = torch.tensor([0.5, 0.75]).repeat(20)[:40].view(4, 10)  # exactly at tau, or above
    case.scores.data.copy_(pattern)
    dy = torch.randn(3, 4)
    got = run_op(case, dy, backend)
    kept_by_hand = case.weight.detach() * (pattern == 0.75)
    torch.testing.assert_close(got["y"], F.linear(case.x.detach(), kept_by_hand, case.bias.detach()),
                               atol=1e-5, rtol=1e-5)
    assert_matches_reference(got, case, dy, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_scores_are_pruned_without_nan_outputs(backend):
    case = make_case((4,), 6, 18, train_weight=True, seed=12)
    case.scores.data.view(-1)[::3] = float("nan")
    dy = torch.randn(4, 6)
    got = run_op(case, dy, backend)
    for name, value in got.items():
        assert not torch.isnan(value).any(), f"NaN in {name}"
    assert (got["weight"][torch.isnan(case.scores.detach())] == 0).all()
    assert_matches_reference(got, case, dy, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_x_and_weight(backend):
    gen = torch.Generator().manual_seed(13)
    N, K = 11, 19
    # x: a transposed [K, tokens] buffer, then a strided slice of tokens; weight and scores transposed
    x = torch.randn(K, 2 * 9, generator=gen).t()[::2].requires_grad_()
    weight = torch.randn(K, N, generator=gen).t().requires_grad_()
    scores = torch.randn(K, N, generator=gen).t().requires_grad_()
    bias = torch.randn(N, generator=gen).requires_grad_()
    assert not (x.is_contiguous() or weight.is_contiguous() or scores.is_contiguous())
    case = Case(x, weight, bias, scores, None, 0.0)
    dy = torch.randn(N, 9, generator=gen).t()  # a non-contiguous incoming gradient too
    got = run_op(case, dy, backend)
    assert_matches_reference(got, case, dy, torch.float32, backend)
    # 3-D x sliced in its last dim (row stride != K)
    x3 = torch.randn(2, 4, K + 5, generator=gen)[..., 2:K + 2].requires_grad_()
    case3 = Case(x3, weight, bias, scores, None, 0.0)
    dy3 = torch.randn(2, 4, N, generator=gen)
    assert_matches_reference(run_op(case3, dy3, backend), case3, dy3, torch.float32, backend)


@pytest.mark.parametrize("backend", ["torch", "triton_dense", "triton_fused"])
def test_non_contiguous_bias(backend):
    gen = torch.Generator().manual_seed(23)
    x, weight, scores = (torch.randn(4, 8, generator=gen), torch.randn(3, 8, generator=gen),
                         torch.randn(3, 8, generator=gen))
    bias = torch.randn(6, generator=gen)[::2].requires_grad_()  # stride 2
    case = Case(x, weight, bias, scores, None, 0.0)
    dy = torch.randn(4, 3, generator=gen)
    assert_matches_reference(run_op(case, dy, backend), case, dy, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_accumulate(backend):
    case = make_case((5,), 7, 9, train_weight=True, seed=14)
    dy1, dy2 = torch.randn(5, 7), torch.randn(5, 7)
    first = run_op(case, dy1, backend)
    first = {k: v.clone() for k, v in first.items()}
    y = masked_linear(case.x, case.weight, case.bias, scores=case.scores, threshold=case.threshold,
                      backend=backend)
    y.backward(dy2)  # no zeroing: .grad must become the sum of both calls
    second_alone = reference64(case, dy2)
    for name, t in case.leaves().items():
        torch.testing.assert_close(t.grad.double(), first[name].double() + second_alone[name],
                                   atol=1e-5, rtol=1e-5, msg=f"{name} did not accumulate")


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_triton_paths_agree_with_torch_twin(backend):
    case = make_case((3, 4), 25, 30, train_weight=True, seed=15)
    dy = torch.randn(3, 4, 25)
    twin = run_op(case, dy, "torch")
    got = run_op(case, dy, backend)
    for name in twin:
        torch.testing.assert_close(got[name], twin[name], atol=1e-5, rtol=1e-5, msg=name)


def test_auto_and_triton_backends_on_cpu(monkeypatch):
    monkeypatch.delenv("MASKEDBERT_DISPATCH_TABLE", raising=False)
    case = make_case((4,), 6, 10, seed=16)
    dy = torch.randn(4, 6)
    twin = run_op(case, dy, "torch")
    auto = run_op(case, dy, "auto")  # CPU tensors: the PyTorch twin, bit for bit
    for name in twin:
        assert torch.equal(auto[name], twin[name]), name
    dispatched = run_op(case, dy, "triton")  # a Triton path chosen by the dispatcher
    assert_matches_reference(dispatched, case, dy, torch.float32, "triton")


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_cpu_with_fp32_master_weights(backend, autocast_dtype):
    case = make_case((2, 3), 13, 22, train_weight=True, seed=17)
    dy = torch.randn(2, 3, 13, dtype=autocast_dtype)
    with torch.autocast("cpu", dtype=autocast_dtype):
        y = masked_linear(case.x, case.weight, case.bias, scores=case.scores, threshold=case.threshold,
                          backend=backend)
        like = F.linear(case.x, case.weight, case.bias)
    assert y.dtype == like.dtype == autocast_dtype
    y.backward(dy)
    for name, t in case.leaves().items():
        assert t.grad.dtype == torch.float32, f"{name}.grad is {t.grad.dtype}, expected the master dtype"
    # the reference sees what autocast computes with: x and W rounded to the autocast dtype
    rounded = Case(case.x.detach().to(autocast_dtype), case.weight.detach().to(autocast_dtype),
                   case.bias.detach(), case.scores, None, case.threshold)
    got = {"y": y.detach(), **{name: t.grad for name, t in case.leaves().items()}}
    ref = reference64(rounded, dy)
    bound, _ = TOLERANCES[autocast_dtype]
    for name, value in got.items():
        assert rel_err(value, ref[name]) < bound, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_dimensions(backend):
    # no tokens: every weight-side gradient is an empty sum, i.e. zero
    case = make_case((0,), 5, 7, train_weight=True, seed=18)
    got = run_op(case, torch.empty(0, 5), backend)
    assert got["y"].shape == (0, 5) and got["x"].shape == (0, 7)
    for name in ("weight", "scores", "bias"):
        assert got[name].shape == case.leaves()[name].shape
        assert (got[name] == 0).all(), f"{name} must be zero for an empty batch"
    # no output features
    case = make_case((4,), 0, 6, train_weight=True, bias=False, seed=18)
    got = run_op(case, torch.empty(4, 0), backend)
    assert got["y"].shape == (4, 0) and (got["x"] == 0).all() and got["x"].shape == (4, 6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_in_features(backend):
    # no input features: y is the bias, the weight-side gradients are empty
    case = make_case((2, 3), 5, 0, train_weight=True, seed=18)
    dy = torch.randn(2, 3, 5)
    got = run_op(case, dy, backend)
    assert torch.equal(got["y"], case.bias.detach().expand(2, 3, 5))
    assert got["x"].shape == (2, 3, 0) and got["weight"].shape == (5, 0)
    torch.testing.assert_close(got["bias"], dy.sum((0, 1)))


def test_threshold_moves_the_mask():
    case = make_case((3,), 6, 8, threshold=0.0, seed=19)
    high = masked_linear(case.x, case.weight, scores=case.scores, threshold=10.0, backend="triton_fused")
    assert (high == 0).all()  # every score is below 10: all pruned, no bias
    low = masked_linear(case.x, case.weight, scores=case.scores, threshold=-10.0, backend="triton_fused")
    torch.testing.assert_close(low, F.linear(case.x, case.weight), atol=1e-5, rtol=1e-5)


def test_ste_grad_split_m_atomic_path_matches_single_split():
    # split-K over tokens adds partial sums with atomics; the GPU picks split_m > 1 for BERT shapes,
    # the interpreter defaults to 1, so force it here
    from maskedbert.kernels.ste_grad import ste_grad_torch, ste_grad_triton

    gen = torch.Generator().manual_seed(20)
    dy, x = torch.randn(50, 9, generator=gen), torch.randn(50, 21, generator=gen)
    weight = torch.randn(9, 21, generator=gen)
    packed = pack_mask(torch.rand(9, 21, generator=gen) > 0.5)
    want = ste_grad_torch(dy, x, weight, packed, want_scores=True, want_weight=True, want_bias=True)
    for split_m in (1, 3):
        got = ste_grad_triton(dy, x, weight, packed, want_scores=True, want_weight=True, want_bias=True,
                              split_m=split_m)
        for g, w, name in zip(got, want, ("dS", "dW", "db")):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=f"split_m={split_m}: {name}")


# ---- the same checks on CUDA (skipped without a GPU) ----
GPU_SHAPES = [((1,), 64, 96), ((3, 123), 123, 123), ((4, 257), 768, 768), ((2, 300), 1000, 200)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, (*s[0], s[1], s[2]))))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["auto", "triton", "triton_dense", "triton_fused", "torch"])
@pytest.mark.parametrize("source", ["scores", "packed"])
def test_cuda_matches_float64_reference(cuda_device, monkeypatch, backend, dtype, shape, source):
    lead, N, K = shape
    case = make_case(lead, N, K, dtype, source=source, train_weight=True, device="cuda", seed=21)
    dy = torch.randn(*lead, N, dtype=dtype, device="cuda")
    # keep TF32 off so the fp32 bound (1e-5) is meaningful; the torch path obeys the same flag
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    got = run_op(case, dy, backend)
    assert got["y"].dtype == dtype
    assert_matches_reference({k: v.cpu() for k, v in got.items()}, _to_cpu(case), dy.cpu(), dtype,
                             f"cuda {backend} {dtype} {shape}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton_dense", "triton_fused"])
def test_cuda_gradients_accumulate_and_autocast(cuda_device, backend):
    case = make_case((8, 64), 96, 80, train_weight=True, device="cuda", seed=22)
    dy = torch.randn(8, 64, 96, device="cuda", dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = masked_linear(case.x, case.weight, case.bias, scores=case.scores, backend=backend)
    assert y.dtype == torch.bfloat16
    y.backward(dy)
    first = {name: t.grad.clone() for name, t in case.leaves().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        masked_linear(case.x, case.weight, case.bias, scores=case.scores, backend=backend).backward(dy)
    for name, t in case.leaves().items():
        assert t.grad.dtype == torch.float32
        torch.testing.assert_close(t.grad, 2 * first[name], atol=1e-4, rtol=1e-4)


def _to_cpu(case: Case) -> Case:
    move = lambda t: None if t is None else t.detach().cpu()
    return Case(move(case.x), move(case.weight), move(case.bias), move(case.scores), move(case.mask),
                case.threshold)
