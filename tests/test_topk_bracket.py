"""The bracketed fast path of the Triton top-k (topk_radix step 0) and TopkTracker.

A bracket only changes which passes run: every result must equal the bracket-free selection and
the float64 reference, whether the bracket holds (hit), misses on either side, or holds the k-th
value but with too many candidates for the buffer.
"""
from __future__ import annotations

import pytest
import torch

from maskedbert.kernels import TopkTracker, num_pruned, topk_masks

from test_topk import reference_topk

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)


def _layer_bracket(kth: torch.Tensor, below: float, above: float):
    return kth - below, kth + above


def _check(tensors, sparsity, masks, kth, scope="layer"):
    want_masks, want_kth = topk_masks(tensors, sparsity, scope=scope, backend="torch")
    for t, m, w in zip(tensors, masks, want_masks):
        assert torch.equal(m, w)
    assert torch.equal(kth, want_kth)
    if scope == "layer":
        for t, m in zip(tensors, masks):
            keep = t.numel() - num_pruned(t.numel(), sparsity)
            assert torch.equal(m.reshape(-1), reference_topk(t, keep))


def _tensors(seed=0):
    gen = torch.Generator().manual_seed(seed)
    # odd sizes, several interpreter tiles each (tile = 512 elements), one single element
    return [torch.randn(shape, generator=gen) for shape in [(37, 41), (3, 5), (1200,), (1,), (61, 29)]]


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_a_tight_bracket_hits_and_matches(sparsity):
    tensors = _tensors()
    _, kth = topk_masks(tensors, sparsity, backend="torch")
    hits = torch.zeros(len(tensors), dtype=torch.int32)
    bracket = _layer_bracket(kth, 0.01, 0.01)
    masks, got_kth = topk_masks(tensors, sparsity, backend="triton", bracket=bracket, _hits=hits)
    _check(tensors, sparsity, masks, got_kth)
    # every tensor with more than one element has its k-th value strictly inside a small window
    assert hits.tolist()[:3] == [1, 1, 1] and hits[4] == 1


@pytest.mark.parametrize("where", ["below", "above", "empty", "too_wide", "nan"])
def test_a_wrong_bracket_falls_back_to_the_same_result(where):
    tensors = _tensors(1)
    sparsity = 0.7
    _, kth = topk_masks(tensors, sparsity, backend="torch")
    lo, hi = {
        "below": (kth - 1.0, kth - 0.5),      # the k-th value is above the window
        "above": (kth + 0.5, kth + 1.0),
        "empty": (kth + 1.0, kth - 1.0),      # lo > hi
        "too_wide": (kth - 100.0, kth + 100.0),  # holds it, but every element is a candidate
        "nan": (torch.full_like(kth, float("nan")), torch.full_like(kth, float("nan"))),
    }[where]
    hits = torch.zeros(len(tensors), dtype=torch.int32)
    masks, got_kth = topk_masks(tensors, sparsity, backend="triton", bracket=(lo, hi), _hits=hits)
    _check(tensors, sparsity, masks, got_kth)
    big = [0, 2, 4]  # the 1-element and 15-element tensors may fit whole in the candidate buffer
    assert hits[big].tolist() == [0, 0, 0]


def test_ties_at_the_kth_value_inside_the_bracket_are_cut_by_index():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1500, generator=gen)
    x[torch.randperm(1500, generator=gen)[:40]] = 0.25  # 40 equal values around the cut
    keep = int((x > 0.25).sum()) + 17  # the cut falls inside the run of ties
    sparsity = 1 - keep / x.numel()
    assert x.numel() - num_pruned(x.numel(), sparsity) == keep
    hits = torch.zeros(1, dtype=torch.int32)
    bracket = (torch.tensor([0.2]), torch.tensor([0.3]))
    masks, kth = topk_masks([x], sparsity, backend="triton", bracket=bracket, _hits=hits)
    assert hits.item() == 1
    assert torch.equal(masks[0], reference_topk(x, keep))
    assert kth.item() == 0.25


def test_global_scope_with_a_bracket():
    tensors = _tensors(2)
    _, kth = topk_masks(tensors, 0.6, scope="global", backend="torch")
    lo = torch.full((len(tensors),), kth[0].item() - 0.02)
    hi = torch.full((len(tensors),), kth[0].item() + 0.02)
    lo[1] -= 5.0  # global: the widest guess counts (min of lo, max of hi)
    hits = torch.zeros(1, dtype=torch.int32)
    masks, got = topk_masks(tensors, 0.6, scope="global", backend="triton", bracket=(lo, hi), _hits=hits)
    _check(tensors, 0.6, masks, got, scope="global")
    flat = torch.cat([t.reshape(-1) for t in tensors])
    keep = flat.numel() - num_pruned(flat.numel(), 0.6)
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks]), reference_topk(flat, keep))


def test_nothing_or_everything_kept_and_empty_tensors_ignore_the_bracket():
    tensors = _tensors(4) + [torch.empty(0), torch.empty(3, 0)]
    for sparsity in (0.0, 1.0, [0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 0.5]):
        _, kth = topk_masks(tensors, sparsity, backend="torch")
        kth = torch.nan_to_num(kth, posinf=0.0)
        masks, got = topk_masks(tensors, sparsity, backend="triton", bracket=(kth - 0.1, kth + 0.1))
        want, want_kth = topk_masks(tensors, sparsity, backend="torch")
        assert all(torch.equal(a, b) for a, b in zip(masks, want))
        assert torch.equal(got, want_kth)


def test_bracketed_passes_skip_the_data(histogram_passes):
    """On a hit, the radix levels read candidates only: every data pass sees the segment as ready."""
    tensors = _tensors(5)[:3]
    _, kth = topk_masks(tensors, 0.5, backend="torch")
    histogram_passes.clear()  # only the bracketed call below
    masks, got = topk_masks(tensors, 0.5, backend="triton", bracket=(kth - 0.01, kth + 0.01))
    _check(tensors, 0.5, masks, got)
    states = [args[10] for args, _ in histogram_passes]  # candidate state per segment as each pass starts
    assert states and all(s == [2, 2, 2] for s in states)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_tracker_over_drifting_scores_stays_exact_and_hits(backend):
    gen = torch.Generator().manual_seed(6)
    scores = [torch.randn(shape, generator=gen) * 0.01 for shape in [(45, 33), (1300,), (7, 7)]]
    tracker = TopkTracker()
    for step in range(6):
        sparsity = 0.7 + 0.01 * step  # a rising schedule (faster than a real one), as in mask training
        masks, kth = tracker(scores, sparsity, backend=backend)
        _check(scores, sparsity, masks, kth)
        for s in scores:  # small Adam-like updates
            s.add_(torch.randn(s.shape, generator=gen) * 1e-4)
    assert tracker.calls == 6 and tracker.bracketed_calls == 5
    if backend == "triton":
        assert tracker.hit_rate() > 0.5
    else:
        assert tracker.hit_rate() == 0.0  # the twin ignores the bracket


def test_tracker_resets_when_the_tensors_change():
    tracker = TopkTracker()
    tracker(_tensors(7), 0.5, backend="torch")
    assert tracker.bracket() is not None
    tracker([torch.randn(10)], 0.5, backend="torch")
    assert tracker.calls == 1 and tracker.bracketed_calls == 0


def test_bad_brackets_and_tracker_settings_name_the_argument():
    tensors = _tensors()
    kth = torch.zeros(len(tensors))
    with pytest.raises(TypeError, match="bracket"):
        topk_masks(tensors, 0.5, bracket=kth)
    with pytest.raises(ValueError, match="bracket lo has 2 entries"):
        topk_masks(tensors, 0.5, bracket=(kth[:2], kth))
    with pytest.raises(TypeError, match="bracket hi must be a float tensor"):
        topk_masks(tensors, 0.5, bracket=(kth, kth.int()))
    with pytest.raises(ValueError, match="growth"):
        TopkTracker(growth=-1)
    with pytest.raises(ValueError, match="relative_margin"):
        TopkTracker(relative_margin=float("nan"))


def test_a_bin_kept_whole_keeps_only_the_candidates_not_the_data_below_the_bracket():
    """The k-th value is the smallest candidate: the first radix level then keeps a whole bin, and the
    data below the bracket sharing that bin's leading bits (all of [0.5, 2) here) must stay pruned."""
    x = torch.linspace(1.0, 1.99, 100)
    hits = torch.zeros(1, dtype=torch.int32)
    bracket = (torch.tensor([1.895]), torch.tensor([1.955]))  # holds 1.90 .. 1.95; 1.96 .. 1.99 above
    masks, kth = topk_masks([x], 0.9, backend="triton", bracket=bracket, _hits=hits)
    assert hits.item() == 1
    assert torch.equal(masks[0], reference_topk(x, 10))
    assert kth.item() == x[90].item()


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("seed", range(6))
def test_random_brackets_never_change_the_result(scope, seed):
    """Random data (smooth, tied, clustered) and random guesses around, off and across the k-th value."""
    gen = torch.Generator().manual_seed(100 + seed)
    kinds = [lambda n: torch.randn(n, generator=gen),
             lambda n: torch.randint(0, 3, (n,), generator=gen).float() * 0.02,
             lambda n: 1.0 + torch.randint(0, 50, (n,), generator=gen).float() * 2.0**-23]
    sizes = torch.randint(1, 1400, (4,), generator=gen).tolist()
    tensors = [kinds[int(torch.randint(0, 3, (1,), generator=gen))](n) for n in sizes]
    sparsity = float(torch.rand(1, generator=gen))
    _, kth = topk_masks(tensors, sparsity, scope=scope, backend="torch")
    kth = torch.nan_to_num(kth, posinf=0.0)
    scale = kth.abs() + 1e-3
    lo = kth - scale * torch.rand(len(tensors), generator=gen) * 0.2 + scale * (torch.rand(1, generator=gen) - 0.5) * 0.1
    hi = lo + scale * torch.rand(len(tensors), generator=gen) * 0.3
    masks, got = topk_masks(tensors, sparsity, scope=scope, backend="triton", bracket=(lo, hi))
    _check(tensors, sparsity, masks, got, scope=scope)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gpu_tracker_matches_twin_and_hits_on_bert_sized_scores(scope, cuda_device):
    gen = torch.Generator().manual_seed(20)
    scores = [torch.randn(s, generator=gen) * 0.01 for s in [(768, 768), (3072, 768), (768, 3072), (3, 768)]]
    tracker = TopkTracker()
    for step in range(5):
        sparsity = 0.7 + 0.002 * step
        on_gpu = [s.to(cuda_device) for s in scores]
        masks, kth = tracker(on_gpu, sparsity, scope=scope, backend="triton")
        want, want_kth = topk_masks(scores, sparsity, scope=scope, backend="torch")
        assert all(torch.equal(m.cpu(), w) for m, w in zip(masks, want))
        assert torch.equal(kth.cpu(), want_kth)
        for s in scores:
            s.add_(torch.randn(s.shape, generator=gen) * 1e-4)
    assert tracker.hit_rate() > 0.5


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("kind", ["randn", "ties"])
def test_largest_pruned_value_matches_the_masks(scope, kind):
    gen = torch.Generator().manual_seed(30)
    make = (lambda n: torch.randn(n, generator=gen)) if kind == "randn" else \
        (lambda n: torch.randint(0, 2, (n,), generator=gen).float() * 0.02)
    tensors = [make(n) for n in (900, 37, 1, 0, 610)]
    for sparsity in (0.0, 0.3, 0.9, 1.0):
        results = {b: topk_masks(tensors, sparsity, scope=scope, backend=b, pruned_max=True)
                   for b in ("torch", "triton")}
        masks, kth, pruned = results["torch"]
        want = [t[~m].max() if (~m).any() else torch.tensor(-float("inf")) for t, m in zip(tensors, masks)]
        want = torch.stack(want)
        if scope == "global":
            want = want.max().expand(len(tensors))
        assert torch.equal(pruned, want)
        t_masks, t_kth, t_pruned = results["triton"]
        assert all(torch.equal(a, b) for a, b in zip(t_masks, masks))
        assert torch.equal(t_kth, kth) and torch.equal(t_pruned, pruned)
