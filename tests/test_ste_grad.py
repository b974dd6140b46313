"""The weight-side gradients both ways (cuBLAS G + the epilogue kernel, the default; the fused Triton
GEMM), against a float64 reference on odd shapes, every output and gradient; the split sized from
the chosen tile; deterministic mode (no atomics, one fixed config); TF32 settings by either torch API.
"""
from __future__ import annotations

import pytest
import torch

from maskedbert.kernels import _runtime, pack_mask
from maskedbert.kernels.ste_epilogue import ste_epilogue_torch, ste_epilogue_triton
from maskedbert.kernels.ste_grad import choose_split_m, ste_grad_cublas, ste_grad_torch, ste_grad_triton
from test_masked_linear import DTYPES, assert_matches_reference, make_case, run_op

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

ODD_SHAPES = [((1,), 1, 9), ((5, 3), 13, 21), ((2, 17), 40, 24), ((37,), 7, 70)]
IMPLS = {"cublas": ste_grad_cublas, "triton": ste_grad_triton, "torch": ste_grad_torch}


@pytest.mark.parametrize("ste", ["cublas", "triton"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, (*s[0], s[1], s[2]))))
@pytest.mark.parametrize("source", ["scores", "packed"])
def test_masked_linear_matches_float64_with_either_ste(monkeypatch, ste, dtype, shape, source):
    monkeypatch.setenv("MASKEDBERT_STE_GRAD", ste)
    lead, N, K = shape
    case = make_case(lead, N, K, dtype, source=source, train_weight=True, seed=31)
    dy = torch.randn(*lead, N, generator=torch.Generator().manual_seed(32)).to(dtype)
    got = run_op(case, dy, "triton_dense")
    assert set(got) == {"y", "x", "weight", "bias"} | ({"scores"} if source == "scores" else set())
    assert_matches_reference(got, case, dy, dtype, f"{ste} {dtype} {shape} {source}")


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("wants", [(True, True, True), (True, False, False), (False, True, False), (False, False, True)])
def test_each_output_alone_matches_float64(impl, wants):
    gen = torch.Generator().manual_seed(33)
    M, N, K = 29, 11, 19
    dy, x = torch.randn(M, N, generator=gen), torch.randn(M, K, generator=gen)
    weight = torch.randn(N, K, generator=gen)
    keep = torch.rand(N, K, generator=gen) > 0.5
    ds, dw, db = IMPLS[impl](dy, x, weight, pack_mask(keep), want_scores=wants[0], want_weight=wants[1],
                             want_bias=wants[2])
    g = dy.double().t() @ x.double()
    for got, want, wanted in ((ds, g * weight.double(), wants[0]), (dw, g * keep, wants[1]),
                              (db, dy.double().sum(0), wants[2])):
        if not wanted:
            assert got is None
            continue
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_epilogue_kernel_matches_its_twin_on_odd_shapes():
    gen = torch.Generator().manual_seed(34)
    for N, K, wdtype in ((1, 1, torch.float32), (33, 130, torch.bfloat16), (70, 9, torch.float16)):
        g = torch.randn(N, K, generator=gen)
        weight = torch.randn(N, K, generator=gen).to(wdtype)
        packed = pack_mask(torch.rand(N, K, generator=gen) > 0.3)
        got = ste_epilogue_triton(g, weight, packed, want_scores=True, want_weight=True)
        want = ste_epilogue_torch(g, weight, packed, want_scores=True, want_weight=True)
        assert got[1].dtype == wdtype and got[0].dtype == torch.float32
        assert torch.equal(got[0], want[0])  # one multiply per element: exactly the same
        if wdtype == torch.bfloat16 and _runtime.interpreting():
            # the interpreter truncates fp32 -> bf16 casts (the GPU rounds to nearest even): 1 ulp
            torch.testing.assert_close(got[1], want[1], rtol=2**-7, atol=0)
        else:
            assert torch.equal(got[1], want[1])


def test_split_is_sized_from_the_chosen_tile():
    # 3072x768 in 128x128 tiles: 144 tiles on 132 SMs (55% of two waves); split 4 fills 87%
    assert choose_split_m(8192, 3072, 768, 132, 128, 128) == 4
    # in 64x64 tiles it is 576 tiles: 87% of five waves unsplit
    assert choose_split_m(8192, 3072, 768, 132, 64, 64) == 1
    # 768x768: 36 tiles; a split of 7 gives 252 programs, 95% of two waves
    assert choose_split_m(8192, 768, 768, 132, 128, 128) == 7
    # never fewer than 512 tokens a split
    assert choose_split_m(1024, 768, 768, 132, 128, 128) == 2
    assert choose_split_m(511, 768, 768, 132, 128, 128) == 1


def test_triton_ste_splits_with_atomics_unless_deterministic(monkeypatch):
    from maskedbert.kernels import ste_grad as ste_module

    launches = []
    monkeypatch.setattr(ste_module, "interpreting", lambda: False)  # the GPU's choice of split
    monkeypatch.setattr(ste_module, "num_sms", lambda t: 132)
    gen = torch.Generator().manual_seed(35)
    M, N, K = 1100, 9, 21
    dy, x = torch.randn(M, N, generator=gen), torch.randn(M, K, generator=gen)
    weight = torch.randn(N, K, generator=gen)
    packed = pack_mask(torch.rand(N, K, generator=gen) > 0.5)
    # record the launch instead of running it (GPU tiles on the interpreter would be slow)
    monkeypatch.setattr(ste_module, "launch_autotuned",
                        lambda tuner, grid, *a, **k: launches.append((_runtime.deterministic(), grid, a, k)))
    ste_grad_triton(dy, x, weight, packed, want_scores=True, want_weight=True, want_bias=True)
    torch.use_deterministic_algorithms(True)
    try:
        ste_grad_triton(dy, x, weight, packed, want_scores=True, want_weight=True, want_bias=True)
    finally:
        torch.use_deterministic_algorithms(False)
    (free_det, free_grid, _, free_kw), (det, det_grid, _, det_kw) = launches
    meta = {"BLOCK_N": 16, "BLOCK_K": 16}
    assert not free_det and free_kw["ATOMIC"] and free_grid(meta)[1] == 2  # 1100 tokens: two splits of >= 512
    assert det and not det_kw["ATOMIC"] and det_grid(meta)[1] == 1


def test_deterministic_mode_launches_one_fixed_config(monkeypatch):
    import triton

    calls = []

    class Tuner:
        configs = [triton.Config({"B": 1}), triton.Config({"B": 2}), triton.Config({"B": 3})]
        arg_names = ["a"]

        @staticmethod
        def early_config_prune(configs, named, **kw):
            return configs[1:]  # this "device" cannot run the first

        class fn:
            def __class_getitem__(cls, grid):
                return lambda *a, **k: calls.append(("fixed", k["B"]))

        def __getitem__(self, grid):
            return lambda *a, **k: calls.append(("autotuned", None))

    _runtime.launch_autotuned(Tuner(), (1,), 0)
    torch.use_deterministic_algorithms(True)
    try:
        _runtime.launch_autotuned(Tuner(), (1,), 0)
    finally:
        torch.use_deterministic_algorithms(False)
    assert calls == [("autotuned", None), ("fixed", 2)]


def test_deterministic_masked_linear_is_bitwise_reproducible():
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            case = make_case((3, 7), 13, 21, train_weight=True, seed=36)
            dy = torch.randn(3, 7, 13, generator=torch.Generator().manual_seed(37))
            results.append(run_op(case, dy, "triton_dense"))
    finally:
        torch.use_deterministic_algorithms(False)
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name


def test_dot_precision_reads_either_tf32_api(monkeypatch):
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has only the allow_tf32 API")
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"  # the new API: reading allow_tf32 now raises in torch
        assert _runtime.dot_precision(torch.float32) == "tf32"
        matmul.fp32_precision = "ieee"
        assert _runtime.dot_precision(torch.float32) == "ieee"
        assert _runtime.dot_precision(torch.bfloat16) == "tf32"
    finally:
        matmul.fp32_precision = before


def test_int32_offsets_are_refused_clearly():
    big = torch.empty((2**16, 2**15 + 1), device="meta")
    with pytest.raises(ValueError, match=r"x of shape \(65536, 32769\).*int32.*backend='torch'"):
        _runtime.check_int32_offsets("masked_matmul", x=big)
    _runtime.check_int32_offsets("masked_matmul", x=torch.empty((2**16, 2**15 - 1), device="meta"))


@pytest.mark.gpu
def test_launches_follow_the_tensors_device(cuda_device):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    case = make_case((4, 33), 40, 24, torch.bfloat16, train_weight=True, device="cuda:1", seed=38)
    dy = torch.randn(4, 33, 40, device="cuda:1", dtype=torch.bfloat16)
    with torch.cuda.device(0):
        got = run_op(case, dy, "triton_dense")
    assert_matches_reference({k: v.cpu() for k, v in got.items()},
                             make_case((4, 33), 40, 24, torch.bfloat16, train_weight=True, seed=38), dy.cpu(),
                             torch.bfloat16, "cuda:1")


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(768, 768), (3072, 768), (768, 3072)])
def test_cuda_weight_gradients_both_ways_at_bert_shapes(cuda_device, N, K):
    # the fused GEMM splits the 2048 tokens (atomics) on a GPU; cuBLAS + epilogue does not
    gen = torch.Generator().manual_seed(39)
    M = 2048
    dy = torch.randn(M, N, generator=gen).to("cuda", torch.bfloat16)
    x = torch.randn(M, K, generator=gen).to("cuda", torch.bfloat16)
    weight = (torch.randn(N, K, generator=gen) * K ** -0.5).to("cuda", torch.bfloat16)
    keep = (torch.rand(N, K, generator=gen) > 0.5).cuda()
    packed = pack_mask(keep)
    g = dy.double().t() @ x.double()
    want = (g * weight.double(), g * keep, dy.double().sum(0))
    for impl in (ste_grad_cublas, ste_grad_triton):
        got = impl(dy, x, weight, packed, want_scores=True, want_weight=True, want_bias=True)
        for name, a, b in zip(("dS", "dW", "db"), got, want):
            err = (a.double() - b).norm() / b.norm()
            assert err < 1e-2, (impl.__name__, name, float(err))  # bf16 inputs, fp32 accumulation; dW in bf16


@pytest.mark.gpu
def test_cuda_deterministic_mode_is_bitwise_reproducible(cuda_device, monkeypatch):
    monkeypatch.setenv("MASKEDBERT_STE_GRAD", "triton")  # the path with atomics outside deterministic mode
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            case = make_case((8, 256), 768, 768, torch.bfloat16, train_weight=True, device="cuda", seed=40)
            dy = torch.randn(8, 256, 768, generator=torch.Generator().manual_seed(41)).to("cuda", torch.bfloat16)
            results.append(run_op(case, dy, "triton_dense"))
    finally:
        torch.use_deterministic_algorithms(False)
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name
