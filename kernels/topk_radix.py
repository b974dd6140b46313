"""Triton radix select behind kernels.topk: exact top-k masks for many tensors in one set of launches.

The selection rule (kept count, ties to the lower flat index) is documented in topk.py.

Triton plan (no host synchronisation until the final NaN check):
1. fp32 bits -> int32 keys whose signed order is the float order ("ordered keys").
2. up to four histogram passes over 8 key bits each (most significant first): each program builds
   a 256-bin histogram of a tile with tl.histogram and adds it to the segment's row with atomics;
   a one-program-per-segment select kernel then finds the bin holding the k-th largest key and
   narrows the prefix. A segment (a tensor for scope="layer", everything for "global") is finished
   early when its chosen bin is kept whole, or when every key under its prefix is the same value
   (tracked with a per-segment min/max: SRN's tied init finishes after two passes); the later
   passes of a finished segment skip its reads. Blocks with few elements under the prefix (deep
   levels) add them with direct atomics instead of a block histogram. The third pass also copies
   the keys under its prefix to a candidate buffer when they fit (numel/16 slots: smooth scores
   leave a few thousandths), so the fourth level reads those candidates, not the tensor.
3. if the k-th key is shared by more elements than may be kept (ties), a counting pass and a
   cumulative sum give each tile the number of equal keys before it, so the mask pass keeps the
   lowest-index ones.
4. the mask pass writes every mask into one flat bool buffer and the smallest kept key per tensor.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ._runtime import check_triton_tensors, interpreting

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# (shift, width) of each radix digit of the 32-bit key, most significant first. 8-bit digits: Triton
# lowers tl.histogram to warp ballots where each thread owns NUM_BINS / 32 bins and spends a few
# instructions per owned bin for every 32 elements, so the cost grows with the bin count (256 bins:
# ~2 warp instructions per element, near the memory time on an H100; 2048 bins: ~8x that).
RADIX_LEVELS = ((24, 8), (16, 8), (8, 8), (0, 8))
NUM_BINS = 1 << max(width for _, width in RADIX_LEVELS)
# a block with at most this many elements under the prefix adds them with atomics, not tl.histogram
FEW_MATCHES = 32
# the second-to-last pass copies a segment's remaining keys to a buffer of numel / CANDIDATE_FRACTION
# slots (at least CANDIDATE_MIN) when they fit, so the last level skips reading the tensor again
CANDIDATE_FRACTION = 16
CANDIDATE_MIN = 4096


# ----------------------------------------------------------------------------- Triton kernels


@triton.jit
def _ordered_key(x):
    """fp32 -> int32 whose signed order is the float order; -0.0 maps to +0.0's key."""
    bits = x.to(tl.int32, bitcast=True)
    bits = tl.where(bits == -2147483648, 0, bits)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def _tensor_base(tensor_ptrs, t, ALIGNED: tl.constexpr):
    """fp32 pointer to tensor t from the address table; ALIGNED (checked on the host) lets loads vectorize."""
    base = tl.load(tensor_ptrs + t).to(tl.pointer_type(tl.float32))
    if ALIGNED:
        base = tl.multiple_of(base, 16)
    return base


@triton.jit
def _histogram_block(key, valid, prefix, counts, lo, hi, hist_row,
                     SHIFT: tl.constexpr, WIDTH: tl.constexpr, IS_FIRST: tl.constexpr,
                     NUM_BINS: tl.constexpr, BLOCK: tl.constexpr, FEW: tl.constexpr):
    """Add the block's keys under `prefix` to the digit histogram; returns (counts, lo, hi, take)."""
    u = key ^ -2147483648  # unsigned order in the bits; the shifts below are masked
    take = valid
    if not IS_FIRST:
        high = (u >> (SHIFT + WIDTH)) & ((1 << (32 - SHIFT - WIDTH)) - 1)
        take = take & (high == prefix)
    num_taken = tl.sum(take.to(tl.int32))
    digit = tl.where(take, (u >> SHIFT) & ((1 << WIDTH) - 1), 0)
    if num_taken > FEW:
        # elements outside the prefix were counted in bin 0: take them back out (no histogram
        # mask argument, to stay portable across Triton versions)
        bins = tl.arange(0, NUM_BINS)
        counts += tl.histogram(digit, NUM_BINS) - tl.where(bins == 0, BLOCK - num_taken, 0)
    elif num_taken > 0:
        # deep levels match a few scattered elements: direct atomics cost less than a ballot
        # histogram of the whole block (and empty blocks cost nothing)
        tl.atomic_add(hist_row + digit, tl.full([BLOCK], 1, tl.int32), mask=take)
    if num_taken > 0:
        lo = tl.minimum(lo, tl.where(take, key, 2147483647))
        hi = tl.maximum(hi, tl.where(take, key, -2147483648))
    return counts, lo, hi, take


@triton.jit
def _flush_histogram(counts, lo, hi, hist_row, seg_lo, seg_hi, seg, NUM_BINS: tl.constexpr):
    tl.atomic_add(hist_row + tl.arange(0, NUM_BINS), counts, mask=counts != 0)
    # range of the keys under the prefix: one distinct key there ends the search at once
    tl.atomic_min(seg_lo + seg, tl.min(lo))
    tl.atomic_max(seg_hi + seg, tl.max(hi))


@triton.jit
def _radix_histogram_kernel(
    tensor_ptrs, tensor_numels, tensor_segments, tile_tensors, tile_starts,
    seg_active, seg_prefix, hist_ptr, seg_lo, seg_hi,
    seg_compact, cand_keys, seg_cand_start, seg_cand_count,
    SHIFT: tl.constexpr, WIDTH: tl.constexpr, IS_FIRST: tl.constexpr,
    NUM_BINS: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr, ALIGNED: tl.constexpr,
    FEW: tl.constexpr, COMPACT: tl.constexpr,
):
    """COMPACT=0: plain pass. 1: also copy the keys under the prefix of compacted segments to the
    candidate buffer (the next level reads only those). 2: skip compacted segments."""
    tile = tl.program_id(0)
    t = tl.load(tile_tensors + tile)
    seg = tl.load(tensor_segments + t)
    active = tl.load(seg_active + seg)
    if COMPACT == 2:
        active = active * (1 - tl.load(seg_compact + seg))
    if active != 0:
        base = _tensor_base(tensor_ptrs, t, ALIGNED)
        numel = tl.load(tensor_numels + t)
        start = tl.multiple_of(tl.load(tile_starts + tile), BLOCK)
        prefix = tl.load(seg_prefix + seg)
        hist_row = hist_ptr + seg * NUM_BINS
        counts = tl.zeros([NUM_BINS], dtype=tl.int32)
        lo = tl.full([BLOCK], 2147483647, tl.int32)
        hi = tl.full([BLOCK], -2147483648, tl.int32)
        compact = 0
        cand_base = cand_keys
        if COMPACT == 1:
            compact = tl.load(seg_compact + seg)
            cand_base = cand_keys + tl.load(seg_cand_start + seg)
        for it in range(ITERS):
            offs = start + it * BLOCK + tl.arange(0, BLOCK)
            valid = offs < numel
            key = _ordered_key(tl.load(base + offs, mask=valid, other=0.0))
            counts, lo, hi, take = _histogram_block(
                key, valid, prefix, counts, lo, hi, hist_row, SHIFT, WIDTH, IS_FIRST, NUM_BINS, BLOCK, FEW
            )
            if COMPACT == 1:
                taken = take.to(tl.int32)
                num_taken = tl.sum(taken)
                if (compact != 0) & (num_taken > 0):
                    # reserve slots, then write in block order (the candidates' order is irrelevant:
                    # ties are cut by index in the full-data mask pass)
                    slot = tl.atomic_add(seg_cand_count + seg, num_taken)
                    tl.store(cand_base + slot + tl.cumsum(taken, 0) - taken, key, mask=take)
        _flush_histogram(counts, lo, hi, hist_row, seg_lo, seg_hi, seg, NUM_BINS)


@triton.jit
def _candidate_histogram_kernel(
    cand_keys, seg_cand_start, seg_cand_count, seg_active, seg_compact, seg_prefix, hist_ptr, seg_lo, seg_hi,
    SHIFT: tl.constexpr, WIDTH: tl.constexpr, NUM_BINS: tl.constexpr, BLOCK: tl.constexpr,
    ITERS: tl.constexpr, FEW: tl.constexpr,
):
    """The last level for compacted segments: a histogram of the candidate keys only."""
    seg = tl.program_id(0)
    chunk_start = tl.program_id(1) * BLOCK * ITERS
    count = tl.load(seg_cand_count + seg)
    run = tl.load(seg_active + seg) * tl.load(seg_compact + seg)
    if (run != 0) & (chunk_start < count):
        cand_base = cand_keys + tl.load(seg_cand_start + seg)
        prefix = tl.load(seg_prefix + seg)
        hist_row = hist_ptr + seg * NUM_BINS
        counts = tl.zeros([NUM_BINS], dtype=tl.int32)
        lo = tl.full([BLOCK], 2147483647, tl.int32)
        hi = tl.full([BLOCK], -2147483648, tl.int32)
        for it in range(ITERS):
            offs = chunk_start + it * BLOCK + tl.arange(0, BLOCK)
            valid = offs < count
            key = tl.load(cand_base + offs, mask=valid, other=0)
            counts, lo, hi, take = _histogram_block(
                key, valid, prefix, counts, lo, hi, hist_row, SHIFT, WIDTH, False, NUM_BINS, BLOCK, FEW
            )
        _flush_histogram(counts, lo, hi, hist_row, seg_lo, seg_hi, seg, NUM_BINS)


@triton.jit
def _radix_select_kernel(
    hist_ptr, seg_lo, seg_hi, seg_active, seg_need, seg_prefix, seg_thresh, seg_need_eq,
    seg_compact, seg_cand_cap,
    SHIFT: tl.constexpr, WIDTH: tl.constexpr, IS_LAST: tl.constexpr, NUM_BINS: tl.constexpr,
    DECIDE_COMPACT: tl.constexpr,
):
    s = tl.program_id(0)
    active = tl.load(seg_active + s)
    if active != 0:
        bins = tl.arange(0, NUM_BINS)
        counts = tl.load(hist_ptr + s * NUM_BINS + bins)
        need = tl.load(seg_need + s)
        total = tl.sum(counts)
        at_or_above = total - tl.cumsum(counts, 0) + counts
        chosen = tl.max(tl.where(at_or_above >= need, bins, -1))
        in_chosen = tl.sum(tl.where(bins == chosen, counts, 0))
        above = tl.sum(tl.where(bins > chosen, counts, 0))
        need_in = need - above
        prefix = (tl.load(seg_prefix + s) << WIDTH) | chosen
        whole_bin = need_in == in_chosen
        # lowest key of the chosen bin; equal keys beyond need_in are cut by index in the mask pass
        thresh = (prefix << SHIFT) ^ -2147483648
        need_eq = tl.where(whole_bin, 2147483647, need_in)
        lo = tl.load(seg_lo + s)
        uniform = lo == tl.load(seg_hi + s)  # every key under the prefix is the same value
        thresh = tl.where(uniform, lo, thresh)
        # all kept (need == total) is marked INT32_MAX so the tie-count pass skips the segment
        need_eq = tl.where(uniform, tl.where(need == total, 2147483647, need), need_eq)
        done = whole_bin | uniform | IS_LAST
        tl.store(seg_active + s, tl.where(done, 0, 1))
        tl.store(seg_thresh + s, thresh)
        tl.store(seg_need_eq + s, need_eq)
        tl.store(seg_prefix + s, prefix)
        tl.store(seg_need + s, need_in)
        if DECIDE_COMPACT:  # the next pass copies the in_chosen keys under the new prefix if they fit
            tl.store(seg_compact + s, (in_chosen <= tl.load(seg_cand_cap + s)).to(tl.int32))


@triton.jit
def _tie_count_kernel(
    tensor_ptrs, tensor_numels, tensor_segments, tile_tensors, tile_starts,
    seg_thresh, seg_need_eq, tile_eq, BLOCK: tl.constexpr, ITERS: tl.constexpr, ALIGNED: tl.constexpr,
):
    tile = tl.program_id(0)
    t = tl.load(tile_tensors + tile)
    seg = tl.load(tensor_segments + t)
    need_eq = tl.load(seg_need_eq + seg)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    if (need_eq > 0) & (need_eq < 2147483647):
        base = _tensor_base(tensor_ptrs, t, ALIGNED)
        numel = tl.load(tensor_numels + t)
        start = tl.multiple_of(tl.load(tile_starts + tile), BLOCK)
        thresh = tl.load(seg_thresh + seg)
        for it in range(ITERS):
            offs = start + it * BLOCK + tl.arange(0, BLOCK)
            valid = offs < numel
            x = tl.load(base + offs, mask=valid, other=0.0)
            acc += ((_ordered_key(x) == thresh) & valid).to(tl.int32)
    tl.store(tile_eq + tile, tl.sum(acc))


@triton.jit
def _mask_kernel(
    tensor_ptrs, tensor_numels, tensor_segments, tensor_out_offsets, tile_tensors, tile_starts,
    seg_thresh, seg_need_eq, tile_eq_before, kth_keys, nan_counts, out_ptr,
    BLOCK: tl.constexpr, ITERS: tl.constexpr, ALIGNED: tl.constexpr,
):
    tile = tl.program_id(0)
    t = tl.load(tile_tensors + tile)
    seg = tl.load(tensor_segments + t)
    base = _tensor_base(tensor_ptrs, t, ALIGNED)
    numel = tl.load(tensor_numels + t)
    start = tl.multiple_of(tl.load(tile_starts + tile), BLOCK)
    out_base = out_ptr + tl.load(tensor_out_offsets + t)
    thresh = tl.load(seg_thresh + seg)
    # need_eq: equal-to-threshold keys to keep (lowest index first); INT32_MAX keeps them all
    need_eq = tl.load(seg_need_eq + seg)
    running = tl.load(tile_eq_before + tile)
    cut_ties = (need_eq > 0) & (need_eq < 2147483647)
    min_kept = tl.full([BLOCK], 2147483647, tl.int32)
    nans = tl.zeros([BLOCK], dtype=tl.int32)
    for it in range(ITERS):
        offs = start + it * BLOCK + tl.arange(0, BLOCK)
        valid = offs < numel
        x = tl.load(base + offs, mask=valid, other=0.0)
        nans += ((x != x) & valid).to(tl.int32)  # counted here: this pass reads every tensor
        key = _ordered_key(x)
        eq = ((key == thresh) & valid).to(tl.int32)
        if cut_ties:  # the scan only runs for segments whose k-th key is shared
            rank = running + tl.cumsum(eq, 0) - eq
            keep_eq = (eq != 0) & (rank < need_eq)
            running += tl.sum(eq)
        else:
            keep_eq = (eq != 0) & (need_eq > 0)
        keep = valid & ((key > thresh) | keep_eq)
        tl.store(out_base + offs, keep.to(tl.uint8), mask=valid)
        min_kept = tl.minimum(min_kept, tl.where(keep, key, 2147483647))
    tl.atomic_min(kth_keys + t, tl.min(min_kept))
    tl.atomic_add(nan_counts + t, tl.sum(nans))


# ----------------------------------------------------------------------------- launchers


def _tile_shape() -> tuple[int, int]:
    """(BLOCK, ITERS): a program reads ITERS blocks of BLOCK elements, then flushes its histogram."""
    if interpreting():
        return 256, 2  # several tiles per test tensor, so the cross-tile tie ranks are exercised
    return 2048, 16


@functools.lru_cache(maxsize=64)
def _layout(device: torch.device, ptrs: tuple[int, ...], numels: tuple[int, ...], scope: str, tile: int):
    """Per-tensor and per-tile tables (cached: the same model gives the same pointers every step)."""
    tile_tensors, tile_starts, seg_first_tile = [], [], []
    out_offsets, offset = [], 0
    for t, n in enumerate(numels):
        if scope == "layer":
            seg_first_tile.append(len(tile_tensors))
        out_offsets.append(offset)
        offset += n
        for start in range(0, n, tile):
            tile_tensors.append(t)
            tile_starts.append(start)
    segments = list(range(len(numels))) if scope == "layer" else [0] * len(numels)
    if scope == "global":
        seg_first_tile = [0]
    # an empty tensor has no tiles: point it anywhere valid (no tile reads its entry)
    seg_first_tile = [min(i, max(len(tile_tensors) - 1, 0)) for i in seg_first_tile]
    as_i32 = functools.partial(torch.tensor, dtype=torch.int32, device=device)
    return {
        "ptrs": torch.tensor(ptrs, dtype=torch.int64, device=device),
        "numels": as_i32(numels),
        "segments": as_i32(segments),
        "out_offsets": torch.tensor(out_offsets, dtype=torch.int64, device=device),
        "tile_tensors": as_i32(tile_tensors),
        "tile_starts": as_i32(tile_starts),
        "tile_segments": torch.tensor([segments[t] for t in tile_tensors], dtype=torch.long, device=device),
        "seg_first_tile": torch.tensor(seg_first_tile, dtype=torch.long, device=device),
        "num_tiles": len(tile_tensors),
        "total": offset,
    }


def _capacity(numel: int) -> int:
    """Candidate slots of a segment: enough for smooth score distributions (after two 8-bit levels
    a few thousandths of the elements remain), small next to the data it saves reading again."""
    floor = 16 if interpreting() else CANDIDATE_MIN  # small test tensors must exercise both paths
    return min(numel, max(floor, numel // CANDIDATE_FRACTION))


@functools.lru_cache(maxsize=64)
def _candidate_layout(seg_numels: tuple[int, ...], device: torch.device):
    caps = [_capacity(n) for n in seg_numels]
    starts = [sum(caps[:i]) for i in range(len(caps))]
    as_i32 = functools.partial(torch.tensor, dtype=torch.int32, device=device)
    return as_i32(caps), as_i32(starts), sum(caps), max(caps)


@functools.lru_cache(maxsize=64)
def _initial_state(numels: tuple[int, ...], keep: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Rows: active, need, prefix, thresh, need_eq (one column per segment). Cached: callers clone it,
    so a training loop pays a device-to-device copy per call instead of a host-to-device one."""
    rows = [[], [], [], [], []]
    for n, k in zip(numels, keep):
        if k == 0:  # keep nothing: no key is above INT32_MAX and no equal key may be kept
            state = (0, 0, 0, INT32_MAX, 0)
        elif k == n:  # keep everything
            state = (0, 0, 0, INT32_MIN, INT32_MAX)
        else:
            state = (1, k, 0, 0, 0)
        for row, value in zip(rows, state):
            row.append(value)
    return torch.tensor(rows, dtype=torch.int32, device=device)


def topk_select_triton(tensors: list[torch.Tensor], keep: list[int], scope: str, names: list[str]):
    """Triton radix select. `keep`: kept count per tensor (scope="layer") or [total] ("global").

    Returns (list of bool masks, viewing one flat buffer; float32 kth values per tensor).
    """
    check_triton_tensors(**dict(zip(names, tensors)))
    device = tensors[0].device
    flats = [t.detach().reshape(-1).to(torch.float32).contiguous() for t in tensors]
    numels = [f.numel() for f in flats]
    if any(n >= 2**31 - 2**20 for n in numels) or (scope == "global" and sum(numels) >= 2**31 - 2**20):
        raise ValueError("backend='triton' selects among fewer than 2**31 elements; use backend='torch'")
    block, iters = _tile_shape()
    aligned = all(f.data_ptr() % 16 == 0 for f in flats)  # views at odd offsets load element by element
    lay = _layout(device, tuple(f.data_ptr() for f in flats), tuple(numels), scope, block * iters)
    seg_numels = numels if scope == "layer" else [sum(numels)]
    state = _initial_state(tuple(seg_numels), tuple(keep), device).clone()
    active, need, prefix, thresh, need_eq = state.unbind(0)
    num_seg = len(seg_numels)
    out = torch.empty(lay["total"], dtype=torch.uint8, device=device)
    kth_keys = torch.full((len(flats),), INT32_MAX, dtype=torch.int32, device=device)
    nan_counts = torch.zeros(len(flats), dtype=torch.int32, device=device)
    num_tiles = lay["num_tiles"]
    if num_tiles:
        levels = len(RADIX_LEVELS)
        hist = torch.zeros((levels, num_seg, NUM_BINS), dtype=torch.int32, device=device)
        key_range = torch.empty((2, levels, num_seg), dtype=torch.int32, device=device)
        key_range[0].fill_(INT32_MAX)  # running min and max key under each segment's prefix
        key_range[1].fill_(INT32_MIN)
        common = (lay["ptrs"], lay["numels"], lay["segments"], lay["tile_tensors"], lay["tile_starts"])
        # candidate buffer: the last level reads only the keys left under the prefix when they fit
        compact = torch.zeros(num_seg, dtype=torch.int32, device=device)
        cand_count = torch.zeros(num_seg, dtype=torch.int32, device=device)
        cand_cap, cand_start, cand_total, max_cap = _candidate_layout(tuple(seg_numels), device)
        cand_keys = torch.empty(max(cand_total, 1), dtype=torch.int32, device=device)
        cand = (compact, cand_keys, cand_start, cand_count)
        last = levels - 1
        for level, (shift, width) in enumerate(RADIX_LEVELS):
            lo, hi = key_range[0, level], key_range[1, level]
            mode = 1 if level == last - 1 else 2 if level == last else 0
            _radix_histogram_kernel[(num_tiles,)](
                *common, active, prefix, hist[level], lo, hi, *cand,
                SHIFT=shift, WIDTH=width, IS_FIRST=level == 0, NUM_BINS=NUM_BINS, BLOCK=block, ITERS=iters,
                ALIGNED=aligned, FEW=FEW_MATCHES, COMPACT=mode,
            )
            if level == last:
                chunks = triton.cdiv(max(max_cap, 1), block * iters)
                _candidate_histogram_kernel[(num_seg, chunks)](
                    cand_keys, cand_start, cand_count, active, compact, prefix, hist[level], lo, hi,
                    SHIFT=shift, WIDTH=width, NUM_BINS=NUM_BINS, BLOCK=block, ITERS=iters, FEW=FEW_MATCHES,
                )
            _radix_select_kernel[(num_seg,)](
                hist[level], lo, hi, active, need, prefix, thresh, need_eq, compact, cand_cap,
                SHIFT=shift, WIDTH=width, IS_LAST=level == last, NUM_BINS=NUM_BINS,
                DECIDE_COMPACT=level == last - 2,
            )
        tile_eq = torch.empty(num_tiles, dtype=torch.int32, device=device)
        _tie_count_kernel[(num_tiles,)](
            *common, thresh, need_eq, tile_eq, BLOCK=block, ITERS=iters, ALIGNED=aligned,
        )
        # equal keys in earlier tiles of the same segment (tiles are in flat-index order)
        before = torch.cumsum(tile_eq, 0, dtype=torch.int64) - tile_eq
        before = (before - before[lay["seg_first_tile"]][lay["tile_segments"]]).to(torch.int32)
        _mask_kernel[(num_tiles,)](
            *common[:3], lay["out_offsets"], *common[3:], thresh, need_eq, before, kth_keys, nan_counts, out,
            BLOCK=block, ITERS=iters, ALIGNED=aligned,
        )
    _raise_on_nan(nan_counts, names)
    masks = [m.view(t.shape) for m, t in zip(out.view(torch.bool).split(numels), tensors)]
    return masks, _kth_values(kth_keys, scope)


def _raise_on_nan(nan_counts: torch.Tensor, names: list[str]) -> None:
    bad = torch.nonzero(nan_counts).flatten().tolist()  # the one host synchronisation
    if bad:
        raise ValueError(f"{names[bad[0]]} contains {int(nan_counts[bad[0]])} NaN values; scores must not be NaN")


def _kth_values(kth_keys: torch.Tensor, scope: str) -> torch.Tensor:
    """Smallest kept key per tensor -> float; +inf where nothing is kept (global: one value for all)."""
    if scope == "global" and kth_keys.numel():
        kth_keys = kth_keys.min().expand_as(kth_keys)
    values = key_to_float(kth_keys)
    return torch.where(kth_keys == INT32_MAX, torch.full_like(values, math.inf), values)


def float_to_key(x: torch.Tensor) -> torch.Tensor:
    """fp32 tensor -> int32 ordered keys (the same map as the kernels' _ordered_key)."""
    bits = x.to(torch.float32).view(torch.int32)
    bits = torch.where(bits == INT32_MIN, torch.zeros_like(bits), bits)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def key_to_float(key: torch.Tensor) -> torch.Tensor:
    bits = torch.where(key < 0, key ^ 0x7FFFFFFF, key)
    return bits.view(torch.float32)

