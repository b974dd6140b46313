"""Exact top-k, magnitude (IMP) and N:M masks: Triton kernels (interpreter on CPU) and PyTorch twins
against a float64 stable-sort reference.

Rule under test: numel - round(sparsity * numel) largest scores kept; among equal scores the lower
flat index wins (scope="global": index over the tensors concatenated in order).
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskedbert.kernels import magnitude_masks, nm_mask, num_pruned, topk_mask, topk_masks
from maskedbert.kernels.topk import float_to_key, key_to_float

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

BACKENDS = ["torch", "triton"]
SPARSITIES = [0.0, 0.1, 0.5, 0.73, 0.9, 1.0]


def reference_topk(flat: torch.Tensor, keep: int) -> torch.Tensor:
    """Stable descending sort in float64: equal values keep index order, so lower index wins."""
    order = torch.sort(flat.double().reshape(-1), descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return mask


def make_scores(kind: str, shape, gen: torch.Generator) -> torch.Tensor:
    if kind == "randn":
        return torch.randn(shape, generator=gen)
    if kind == "srn_ties":  # SRN's magnitude init: every score exactly 0 or 2*tau
        return torch.randint(0, 2, shape, generator=gen).float() * 0.02
    if kind == "few_values":  # heavy ties among several values of both signs, -0.0 and +0.0 mixed
        values = torch.tensor([-1.5, -0.0, 0.0, 0.25, 3.0, float("inf"), -float("inf")])
        return values[torch.randint(0, len(values), shape, generator=gen)]
    if kind == "denormal":  # tiny values: only the low key bits differ (the last radix level decides)
        return torch.randint(-40, 40, shape, generator=gen).float() * 1e-44
    raise ValueError(kind)


KINDS = ["randn", "srn_ties", "few_values", "denormal"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_scope_matches_reference(backend, kind):
    gen = torch.Generator().manual_seed(1)
    # odd shapes, several tiles for the interpreter's 512-element tile, an empty and a 1-element tensor
    tensors = [make_scores(kind, shape, gen) for shape in [(37, 41), (3, 5), (0, 4), (1,), (1200,), (0,)]]
    for sparsity in SPARSITIES:
        masks, kth = topk_masks(tensors, sparsity, scope="layer", backend=backend)
        for t, m, v in zip(tensors, masks, kth):
            keep = t.numel() - num_pruned(t.numel(), sparsity)
            assert m.shape == t.shape and m.dtype == torch.bool
            assert int(m.sum()) == keep
            assert torch.equal(m.reshape(-1), reference_topk(t, keep)), (kind, sparsity)
            expected = t.reshape(-1)[m.reshape(-1)].min().item() if keep else math.inf
            assert v.item() == expected or (expected == 0.0 and v.item() == 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_global_scope_matches_reference(backend, kind):
    gen = torch.Generator().manual_seed(2)
    tensors = [make_scores(kind, shape, gen) for shape in [(20, 30), (7,), (0,), (600,), (3, 3)]]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    for sparsity in SPARSITIES:
        masks, kth = topk_masks(tensors, sparsity, scope="global", backend=backend)
        keep = flat.numel() - num_pruned(flat.numel(), sparsity)
        got = torch.cat([m.reshape(-1) for m in masks])
        assert torch.equal(got, reference_topk(flat, keep)), (kind, sparsity)
        expected = flat[got].min().item() if keep else math.inf
        assert torch.all(kth == expected)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_triton_equals_twin_with_per_layer_sparsities(scope):
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(s, generator=gen) for s in [(9, 64), (64, 9), (513,)]]
    tensors.append(torch.randn(700, generator=gen)[3:])  # a view off 16-byte alignment, non-vector loads
    tensors.append(torch.randn(40, 30, generator=gen).t())  # not contiguous
    sparsity = [0.2, 0.65, 0.999, 0.5, 0.25] if scope == "layer" else 0.4
    a_masks, a_kth = topk_masks(tensors, sparsity, scope=scope, backend="triton")
    b_masks, b_kth = topk_masks(tensors, sparsity, scope=scope, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(a_masks, b_masks))
    assert torch.equal(a_kth, b_kth)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.sampled_from([-2.0, -0.0, 0.0, 0.02, 0.02, 1e-40, 7.5]), min_size=1, max_size=300),
    sparsity=st.floats(0.0, 1.0),
    backend=st.sampled_from(BACKENDS),
)
def test_exact_count_on_tied_inputs(values, sparsity, backend):
    scores = torch.tensor(values, dtype=torch.float32)
    mask = topk_mask(scores, sparsity, backend=backend)
    keep = len(values) - num_pruned(len(values), sparsity)
    assert int(mask.sum()) == keep
    assert torch.equal(mask, reference_topk(scores, keep))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 200), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    scope=st.sampled_from(["layer", "global"]),
)
def test_batched_triton_equals_twin_random(sizes, sparsity, seed, scope):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, generator=gen).round(decimals=1) for n in sizes]  # rounding makes ties
    a_masks, a_kth = topk_masks(tensors, sparsity, scope=scope, backend="triton")
    b_masks, b_kth = topk_masks(tensors, sparsity, scope=scope, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(a_masks, b_masks))
    assert torch.equal(a_kth, b_kth)


def test_tied_scores_finish_the_radix_search_early(histogram_passes):
    """SRN's two-valued init: once every key under the prefix is equal, later passes skip their reads."""
    gen = torch.Generator().manual_seed(10)
    tensors = [make_scores("srn_ties", (900,), gen) for _ in range(2)]
    masks, _ = topk_masks(tensors, 0.9, backend="triton")
    assert [args[5] for args, _ in histogram_passes] == [[1, 1], [1, 1], [0, 0], [0, 0]]  # seg_active
    assert [int(m.sum()) for m in masks] == [90, 90]


def _clustered(gen, size=3000, cluster=100):
    """Smooth scores plus a cluster sharing their top 24 key bits (1 + j * 2**-23, j < 64, with repeats)."""
    x = torch.randn(size, generator=gen)
    j = torch.randint(0, 64, (cluster,), generator=gen).float()
    x[torch.randperm(size, generator=gen)[:cluster]] = 1.0 + j * 2.0**-23
    return x


def test_last_level_reads_only_the_compacted_candidates(histogram_passes):
    from maskedbert.kernels.topk import topk_select

    def last_pass():  # the last level: (active, candidate state) per segment
        return [(args[5], args[10]) for args, kwargs in histogram_passes if kwargs["SHIFT"] == 0]

    gen = torch.Generator().manual_seed(12)
    tensors = [_clustered(gen) for _ in range(3)]
    # the k-th largest falls inside each cluster: 50 cluster values kept besides everything above it
    keep = [int((t > 1.0 + 64 * 2.0**-23).sum()) + 50 for t in tensors]
    masks, kth = topk_select(tensors, keep, scope="layer", backend="triton")
    assert last_pass() == [([1, 1, 1], [2, 2, 2])]  # 2: candidates ready, data not read
    for t, m, k in zip(tensors, masks, keep):
        assert torch.equal(m, reference_topk(t, k))
    twin, twin_kth = topk_select(tensors, keep, scope="layer", backend="torch")
    assert torch.equal(kth, twin_kth)
    # global scope: one segment, one candidate buffer for all tensors
    flat = torch.cat(tensors)
    masks, _ = topk_select(tensors, [sum(keep)], scope="global", backend="triton")
    assert torch.equal(torch.cat(masks), reference_topk(flat, sum(keep)))
    assert last_pass()[-1] == ([1], [2])


def test_num_pruned_uses_python_round():
    assert num_pruned(10, 0.9) == 9
    assert num_pruned(3, 0.5) == 2  # 1.5 rounds to even
    assert num_pruned(5, 0.5) == 2  # 2.5 rounds to even
    assert num_pruned(0, 0.5) == 0


def test_low_precision_inputs_compare_exactly():
    gen = torch.Generator().manual_seed(4)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        scores = torch.randn(300, generator=gen).to(dtype)
        for backend in BACKENDS:
            mask = topk_mask(scores, 0.3, backend=backend)
            assert torch.equal(mask, reference_topk(scores.float(), 300 - num_pruned(300, 0.3)))


def test_ordered_keys_round_trip_and_order():
    x = torch.tensor([-float("inf"), -3.0, -1e-45, -0.0, 0.0, 1e-45, 2.0, float("inf")])
    keys = float_to_key(x)
    assert torch.all(keys[1:] >= keys[:-1]) and keys[3] == keys[4]
    assert torch.equal(key_to_float(keys)[[0, 1, 2, 5, 6, 7]], x[[0, 1, 2, 5, 6, 7]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_scores_raise_naming_the_tensor(backend):
    good = torch.randn(10)
    bad = torch.randn(50)
    bad[7] = float("nan")
    with pytest.raises(ValueError, match=r"tensors\[1\] contains 1 NaN"):
        topk_masks([good, bad], 0.5, backend=backend)
    with pytest.raises(ValueError, match="scores contains 1 NaN"):
        topk_mask(bad, 0.5, backend=backend)
    for sparsity in (0.0, 1.0):  # nothing to select, but NaN is still an error
        with pytest.raises(ValueError, match=r"tensors\[1\] contains 1 NaN"):
            topk_masks([good, bad], sparsity, backend=backend)
        with pytest.raises(ValueError, match=r"tensors\[1\] contains 1 NaN"):
            topk_masks([good, bad], sparsity, scope="global", backend=backend)


def test_bad_arguments():
    scores = torch.randn(10)
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="sparsity"):
            topk_mask(scores, bad)
    with pytest.raises(TypeError, match="scores"):
        topk_mask([1.0, 2.0], 0.5)
    with pytest.raises(TypeError, match=r"tensors\[0\]"):
        topk_masks([torch.arange(4)], 0.5)
    with pytest.raises(TypeError, match="tensors"):
        topk_masks([], 0.5)
    with pytest.raises(ValueError, match="scope"):
        topk_masks([scores], 0.5, scope="row")
    with pytest.raises(ValueError, match="2 entries"):
        topk_masks([scores], [0.5, 0.5])
    with pytest.raises(ValueError, match="single number"):
        topk_masks([scores], [0.5], scope="global")
    with pytest.raises(ValueError, match="backend"):
        topk_mask(scores, 0.5, backend="cuda")


def test_triton_backend_on_cpu_without_interpreter_says_how_to_fix():
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from maskedbert.kernels import topk_masks\n"
        "topk_masks([torch.randn(4)], 0.5, backend='triton')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "needs CUDA tensors, but tensors[0] is on cpu" in result.stderr


# ----------------------------------------------------------------------------- magnitude / IMP


@pytest.mark.parametrize("backend", BACKENDS)
def test_imp_rounds_of_original_weights(backend):
    """The reference IMP schedule: 10% of the original weights per round, up to 90%."""
    gen = torch.Generator().manual_seed(5)
    weights = [torch.randn(30, 17, generator=gen), torch.randn(101, generator=gen)]
    masks = None
    for round_index in range(1, 10):
        new = magnitude_masks(weights, 0.1, masks, amount_of="original", backend=backend)
        for i, (w, m) in enumerate(zip(weights, new)):
            assert int(m.sum()) == w.numel() - round_index * num_pruned(w.numel(), 0.1)
            if masks is not None:
                assert not torch.any(m & ~masks[i])  # pruned stay pruned
            # the kept weights are the largest |W| among the previously kept ones
            previous = torch.ones_like(m) if masks is None else masks[i]
            score = torch.where(previous, w.abs(), torch.full_like(w, -math.inf))
            assert torch.equal(m.reshape(-1), reference_topk(score, int(m.sum())))
        masks = new
    with pytest.raises(ValueError, match="only"):
        magnitude_masks(weights, 0.2, masks, amount_of="original", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_imp_global_remaining(backend):
    gen = torch.Generator().manual_seed(6)
    weights = [torch.randn(40, 8, generator=gen) * 3, torch.randn(200, generator=gen) * 0.1]
    masks, remaining = None, 520
    for _ in range(4):
        masks = magnitude_masks(weights, 0.2, masks, scope="global", amount_of="remaining", backend=backend)
        remaining -= num_pruned(remaining, 0.2)
        assert sum(int(m.sum()) for m in masks) == remaining
    # global: one threshold, so the large-scale matrix keeps more
    assert masks[0].float().mean() > masks[1].float().mean()


def test_magnitude_masks_bad_arguments():
    w = [torch.randn(4, 4)]
    with pytest.raises(ValueError, match="amount_of"):
        magnitude_masks(w, 0.1, amount_of="total")
    with pytest.raises(ValueError, match="amount"):
        magnitude_masks(w, 1.1)
    with pytest.raises(ValueError, match=r"current_masks\[0\] has shape"):
        magnitude_masks(w, 0.1, [torch.ones(4, 5, dtype=torch.bool)])
    with pytest.raises(TypeError, match=r"current_masks\[0\] must be a bool"):
        magnitude_masks(w, 0.1, [torch.ones(4, 4)])
    with pytest.raises(TypeError, match=r"weights\[0\]"):
        magnitude_masks([torch.ones(4, dtype=torch.long)], 0.1)


# ----------------------------------------------------------------------------- N:M


def reference_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    groups = scores.double().reshape(-1, m)
    out = torch.zeros(groups.shape, dtype=torch.bool)
    for g in range(groups.shape[0]):
        out[g, torch.sort(groups[g], descending=True, stable=True).indices[:n]] = True
    return out.reshape(scores.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (0, 4), (4, 4), (4, 8), (2, 3), (3, 5), (1, 1)])
def test_nm_mask_pattern(backend, n, m):
    gen = torch.Generator().manual_seed(7)
    for kind in ("randn", "srn_ties", "few_values"):
        scores = make_scores(kind, (9, 6 * m), gen)
        mask = nm_mask(scores, n, m, backend=backend)
        assert torch.all(mask.reshape(9, 6, m).sum(-1) == n)
        assert torch.equal(mask, reference_nm(scores, n, m))


def test_nm_mask_of_magnitudes_and_errors():
    weight = torch.tensor([[0.1, -5.0, 2.0, 0.0, -1.0, -1.0, 1.0, 1.0]])
    assert nm_mask(weight.abs(), 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    with pytest.raises(ValueError, match="multiple of m=4"):
        nm_mask(torch.randn(3, 6))
    with pytest.raises(ValueError, match="n <= m"):
        nm_mask(torch.randn(3, 8), 5, 4)
    with pytest.raises(ValueError, match="NaN"):
        nm_mask(torch.tensor([[float("nan"), 0.0, 1.0, 2.0]]))
    with pytest.raises(TypeError, match="scores"):
        nm_mask(torch.ones(4, dtype=torch.int32))


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_triton_matches_reference(kind, cuda_device):
    gen = torch.Generator().manual_seed(8)
    tensors = [make_scores(kind, s, gen) for s in [(768, 768), (3072, 768), (3, 768), (0,), (123_457,)]]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    on_gpu = [t.to(cuda_device) for t in tensors]
    for sparsity in (0.0, 0.37, 0.9, 1.0):
        masks, _ = topk_masks(on_gpu, sparsity, scope="layer", backend="triton")
        for t, m in zip(tensors, masks):
            keep = t.numel() - num_pruned(t.numel(), sparsity)
            assert torch.equal(m.cpu().reshape(-1), reference_topk(t, keep))
        masks, _ = topk_masks(on_gpu, sparsity, scope="global", backend="triton")
        keep = flat.numel() - num_pruned(flat.numel(), sparsity)
        assert torch.equal(torch.cat([m.cpu().reshape(-1) for m in masks]), reference_topk(flat, keep))


@pytest.mark.gpu
def test_gpu_nm_and_magnitude(cuda_device):
    gen = torch.Generator().manual_seed(9)
    scores = make_scores("few_values", (256, 1024), gen)
    assert torch.equal(nm_mask(scores.to(cuda_device), 2, 4, backend="triton").cpu(), reference_nm(scores, 2, 4))
    weights = [torch.randn(768, 768, generator=gen).to(cuda_device) for _ in range(3)]
    gpu = magnitude_masks(weights, 0.3, scope="global", backend="triton")
    cpu = magnitude_masks([w.cpu() for w in weights], 0.3, scope="global", backend="torch")
    assert all(torch.equal(a.cpu(), b) for a, b in zip(gpu, cpu))
