"""Mask preparation and bit-packing: the Triton prep kernel against its PyTorch twin and by hand.

The prep kernel is the only reader of fp32 scores on the forward path, so its threshold rule
(strict >, NaN pruned) and its packed format (LSB first, zero padding) are checked exactly here.
"""
from __future__ import annotations

import pytest
import torch

from maskedbert.kernels import PACKED_FORMAT_VERSION, pack_mask, unpack_mask
from maskedbert.kernels.mask_prep import (
    mask_prep_torch,
    mask_prep_triton,
    pack_bits_torch,
    packed_cols,
    unpack_bits_torch,
)

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

# odd sizes: not multiples of 8 (byte boundary), of the 32-row / 16-byte prep tile, or of each other
SHAPES = [(1, 1), (1, 9), (7, 8), (33, 17), (5, 123), (40, 130)]
PREP_FUNCS = {"triton": mask_prep_triton, "torch": mask_prep_torch}


def _scores(shape, generator, threshold=0.0):
    """Scores with exact ties at the threshold and NaNs mixed in, both of which must be pruned."""
    s = torch.randn(shape, generator=generator)
    flat = s.view(-1)
    flat[::5] = threshold
    flat[3::7] = float("nan")
    return s


def _bit_by_hand(packed: torch.Tensor, n: int, k: int) -> bool:
    return bool((int(packed[n, k // 8]) >> (k % 8)) & 1)


def test_packed_format_version_is_one():
    # saved masks depend on this layout; a bump must come with a migration
    assert PACKED_FORMAT_VERSION == 1
    assert packed_cols(1) == 1 and packed_cols(8) == 1 and packed_cols(9) == 2 and packed_cols(0) == 0


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_pack_layout_by_hand(impl):
    # row 0 keeps elements 0 and 9 -> byte0 = 0b00000001, byte1 = 0b00000010; row 1 keeps 7 and 10
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, 0] = mask[0, 9] = True
    mask[1, 7] = mask[1, 10] = True
    _, packed, _ = PREP_FUNCS[impl](None, mask=mask, want_dense=False, want_packed=True)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 2)
    assert packed.tolist() == [[0b00000001, 0b00000010], [0b10000000, 0b00000100]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_pack_every_bit_and_zero_padding(shape, impl):
    gen = torch.Generator().manual_seed(hash(shape) % 1000)
    mask = torch.rand(shape, generator=gen) > 0.5
    _, packed, _ = PREP_FUNCS[impl](None, mask=mask, want_dense=False, want_packed=True)
    N, K = shape
    assert packed.shape == (N, packed_cols(K))
    for n in range(N):
        for k in range(K):
            assert _bit_by_hand(packed, n, k) == bool(mask[n, k])
    pad_bits = packed_cols(K) * 8 - K
    if pad_bits:
        # the top pad_bits of each row's last byte must be zero
        assert (packed[:, -1] >> (8 - pad_bits)).eq(0).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_prep_from_scores_triton_matches_twin(shape, dtype):
    gen = torch.Generator().manual_seed(1)
    threshold = 0.25
    scores = _scores(shape, gen, threshold)
    weight = torch.randn(shape, generator=gen).to(dtype)
    got = mask_prep_triton(weight, scores=scores, threshold=threshold, want_bool=True)
    want = mask_prep_torch(weight, scores=scores, threshold=threshold, want_bool=True)
    keep_by_hand = scores > threshold  # NaN > t is False
    assert torch.equal(want[2], keep_by_hand)
    assert torch.equal(got[2], keep_by_hand)
    assert torch.equal(got[1], want[1])
    assert got[0].dtype == dtype
    # W*M is a select, not arithmetic: bit-identical
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[0], torch.where(keep_by_hand, weight, torch.zeros((), dtype=dtype)))


def test_scores_at_threshold_and_nan_are_pruned():
    scores = torch.tensor([[0.5, 0.5000001, float("nan"), float("inf"), -float("inf"), 0.4999999]])
    weight = torch.ones_like(scores)
    for impl in PREP_FUNCS.values():
        dense, _, keep = impl(weight, scores=scores, threshold=0.5, want_bool=True)
        assert keep.tolist() == [[False, True, False, True, False, False]]
        assert dense.tolist() == [[0.0, 1.0, 0.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("dense_dtype", [torch.float16, torch.bfloat16])
def test_dense_dtype_cast_from_fp32_master(dense_dtype):
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(9, 21, generator=gen)
    scores = torch.randn(9, 21, generator=gen)
    got, _, _ = mask_prep_triton(weight, scores=scores, dense_dtype=dense_dtype, want_packed=False)
    want, _, _ = mask_prep_torch(weight, scores=scores, dense_dtype=dense_dtype, want_packed=False)
    assert got.dtype == dense_dtype
    # the interpreter truncates fp32->bf16 instead of rounding: allow one ulp there
    ulp = torch.finfo(dense_dtype).eps
    torch.testing.assert_close(got.float(), want.float(), atol=0.0, rtol=2 * ulp)


@pytest.mark.parametrize("shape", SHAPES)
def test_bool_and_packed_sources_match(shape):
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(shape, generator=gen) > 0.3
    weight = torch.randn(shape, generator=gen)
    packed = pack_bits_torch(mask)
    outs = {
        (impl, kind): PREP_FUNCS[impl](weight, mask=src, want_bool=True)
        for impl in PREP_FUNCS
        for kind, src in (("bool", mask), ("packed", packed))
    }
    for dense, pk, keep in outs.values():
        assert torch.equal(keep, mask)
        assert torch.equal(pk, packed)
        assert torch.equal(dense, weight * mask)


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(4)
    # transposed weight and scores; a column-sliced bool mask
    weight = torch.randn(37, 19, generator=gen).t()
    scores = torch.randn(37, 19, generator=gen).t()
    assert not weight.is_contiguous() and not scores.is_contiguous()
    got = mask_prep_triton(weight, scores=scores, threshold=0.1, want_bool=True)
    want = mask_prep_torch(weight, scores=scores, threshold=0.1, want_bool=True)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    mask = (torch.rand(19, 80, generator=gen) > 0.5)[:, 3:77:2]
    assert not mask.is_contiguous()
    w2 = torch.randn(mask.shape, generator=gen)
    got = mask_prep_triton(w2, mask=mask, want_bool=True)
    assert torch.equal(got[2], mask)
    assert torch.equal(got[1], pack_bits_torch(mask.contiguous()))
    assert torch.equal(got[0], w2 * mask)


def test_does_not_alias_the_callers_mask():
    mask = torch.tensor([[True, False, True]])
    for impl in PREP_FUNCS.values():
        _, _, keep = impl(None, mask=mask, want_dense=False, want_packed=False, want_bool=True)
        keep[0, 0] = False
        assert bool(mask[0, 0])


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_empty_shapes(impl, shape):
    weight = torch.randn(shape)
    scores = torch.randn(shape)
    dense, packed, keep = PREP_FUNCS[impl](weight, scores=scores, want_bool=True)
    assert dense.shape == shape and keep.shape == shape
    assert packed.shape == (shape[0], packed_cols(shape[1]))


@pytest.mark.parametrize("backend", ["triton", "torch", "auto"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 8), (17, 45)])
def test_pack_unpack_round_trip(backend, shape):
    gen = torch.Generator().manual_seed(5)
    mask = torch.rand(shape, generator=gen) > 0.5
    packed = pack_mask(mask, backend=backend)
    assert torch.equal(packed, pack_bits_torch(mask))
    back = unpack_mask(packed, shape[1], backend=backend)
    assert back.dtype == torch.bool and torch.equal(back, mask)
    assert torch.equal(unpack_bits_torch(packed, shape[1]), mask)


def test_all_kept_and_all_pruned_packing():
    ones = torch.ones(3, 13, dtype=torch.bool)
    packed = pack_mask(ones, backend="triton")
    assert packed[:, 0].eq(0xFF).all() and packed[:, 1].eq(0b00011111).all()
    assert pack_mask(torch.zeros(3, 13, dtype=torch.bool), backend="triton").eq(0).all()


def test_pack_mask_rejects_bad_input():
    with pytest.raises(TypeError, match="mask"):
        pack_mask(torch.ones(3, 4))  # float, not bool
    with pytest.raises(TypeError, match="mask"):
        pack_mask(torch.ones(3, dtype=torch.bool))  # 1-D
    with pytest.raises(TypeError, match="mask"):
        pack_mask([[True]])
    with pytest.raises(TypeError, match="packed"):
        unpack_mask(torch.ones(2, 2, dtype=torch.int32), 16)
    with pytest.raises(ValueError, match="num_cols"):
        unpack_mask(torch.zeros(2, 2, dtype=torch.uint8), 17)  # needs 3 bytes per row
    with pytest.raises(ValueError, match="backend"):
        pack_mask(torch.ones(2, 2, dtype=torch.bool), backend="cuda")


def test_packed_source_without_weight_needs_shape():
    packed = torch.zeros(2, 1, dtype=torch.uint8)
    for impl in PREP_FUNCS.values():
        with pytest.raises(ValueError, match="shape"):
            impl(None, mask=packed, want_dense=False, want_bool=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(768, 768), (3072, 771), (5, 123)])
def test_cuda_prep_matches_twin(cuda_device, dtype, shape):
    gen = torch.Generator().manual_seed(6)
    scores = _scores(shape, gen).to(cuda_device)
    weight = torch.randn(shape, generator=gen).to(cuda_device, dtype)
    got = mask_prep_triton(weight, scores=scores, threshold=0.0, want_bool=True)
    want = mask_prep_torch(weight, scores=scores, threshold=0.0, want_bool=True)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(unpack_mask(got[1], shape[1]), want[2])
