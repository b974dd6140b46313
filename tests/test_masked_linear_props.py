"""Property-based shape fuzzing of masked_linear and the mask packing (hypothesis, reproducible).

derandomize=True makes hypothesis draw the same examples on every run, so CI is reproducible; the
shapes stay small because the Triton paths run under the CPU interpreter here.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskedbert.kernels import masked_linear, pack_mask, unpack_mask
from test_masked_linear import BACKENDS, DTYPES, assert_matches_reference, make_case, run_op

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

FUZZ = settings(max_examples=15, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])

lead_dims = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
features = st.integers(1, 40)


@FUZZ
@given(
    lead=lead_dims, N=features, K=features,
    dtype=st.sampled_from(DTYPES), backend=st.sampled_from(BACKENDS),
    source=st.sampled_from(["scores", "bool", "packed"]),
    bias=st.booleans(), train_weight=st.booleans(),
    threshold=st.sampled_from([0.0, 0.3, -0.5]), seed=st.integers(0, 2**16),
)
def test_any_small_shape_matches_reference(lead, N, K, dtype, backend, source, bias, train_weight,
                                           threshold, seed):
    case = make_case(lead, N, K, dtype, source=source, bias=bias, train_weight=train_weight,
                     threshold=threshold, seed=seed)
    dy = torch.randn(*lead, N, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    got = run_op(case, dy, backend)
    assert got["y"].shape == (*lead, N) and got["y"].dtype == dtype
    assert_matches_reference(got, case, dy, dtype, f"{backend} {dtype} {lead} N={N} K={K} {source}")


@FUZZ
@given(lead=lead_dims, N=features, K=features, seed=st.integers(0, 2**16),
       backend=st.sampled_from(["triton_dense", "triton_fused"]))
def test_triton_and_twin_agree_on_fixed_masks(lead, N, K, seed, backend):
    case = make_case(lead, N, K, source="packed", train_weight=True, seed=seed)
    dy = torch.randn(*lead, N, generator=torch.Generator().manual_seed(seed))
    twin = run_op(case, dy, "torch")
    got = run_op(case, dy, backend)
    for name in twin:
        torch.testing.assert_close(got[name], twin[name], atol=2e-5, rtol=2e-5, msg=name)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(N=st.integers(1, 20), K=st.integers(1, 70), p=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       backend=st.sampled_from(["torch", "triton"]))
def test_pack_unpack_round_trip(N, K, p, seed, backend):
    mask = torch.rand(N, K, generator=torch.Generator().manual_seed(seed)) < p
    packed = pack_mask(mask, backend=backend)
    assert packed.shape == (N, (K + 7) // 8)
    # popcount of the packed bytes equals the number of kept elements (no stray pad bits)
    popcount = sum(bin(int(b)).count("1") for b in packed.flatten())
    assert popcount == int(mask.sum())
    assert torch.equal(unpack_mask(packed, K, backend=backend), mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_mask_three_ways_gives_the_same_output(backend):
    # not fuzzed (one fixed shape): scores, bool and packed encodings of one mask agree bit for bit
    case = make_case((3, 2), 17, 23, source="bool", seed=99)
    packed = pack_mask(case.mask)
    scores = torch.where(case.mask, 1.0, -1.0)
    outs = [
        masked_linear(case.x, case.weight, case.bias, mask=case.mask, backend=backend),
        masked_linear(case.x, case.weight, case.bias, mask=packed, backend=backend),
        masked_linear(case.x, case.weight, case.bias, scores=scores, backend=backend),
    ]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
