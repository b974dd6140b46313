"""Triton radix select kernels behind kernels.topk: exact top-k masks for many tensors at once.

The selection rule (kept count, ties to the lower flat index) is documented in topk.py; the host
side (tables, launches) is in topk_launch.py.

Triton plan (no host synchronisation until the final NaN check):
0. optional bracket pass, given a key range [lo, hi] per segment believed to hold its k-th key
   (e.g. around the previous step's): one read counts the keys above hi and copies the keys inside
   to the candidate buffer. When the counts prove the k-th key is inside and the candidates fit,
   every radix level of that segment reads the candidates only (a "hit": two reads of the data in
   all, this one and the mask pass, instead of four or five); otherwise the segment goes on as if
   there were no bracket. The counts decide, so a wrong bracket costs time, never correctness.
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
   Per-segment candidate state (seg_compact): 0 none, 1 copy during the next data pass, 2 the
   candidates hold every key under the prefix (data passes skip the segment).
3. if the k-th key is shared by more elements than may be kept (ties), a counting pass and a
   cumulative sum give each tile the number of equal keys before it, so the mask pass keeps the
   lowest-index ones.
4. the mask pass writes every mask into one flat bool buffer, the smallest kept key and the largest
   pruned key per tensor.

Every atomic is sem="relaxed": each only accumulates (counts, running min/max) or hands out
candidate slots, and what it writes is read by a later launch, whose boundary orders it. The
default acq_rel would wrap each in a GPU-scope memory barrier (bench/check_atomics_sass.py checks
the compiled SASS has none).
"""
from __future__ import annotations

import triton
import triton.language as tl

# the digit widths, bin count and candidate-buffer sizes these kernels are launched with: topk_keys.py


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
        tl.atomic_add(hist_row + digit, tl.full([BLOCK], 1, tl.int32), mask=take, sem="relaxed")
    if num_taken > 0:
        lo = tl.minimum(lo, tl.where(take, key, 2147483647))
        hi = tl.maximum(hi, tl.where(take, key, -2147483648))
    return counts, lo, hi, take


@triton.jit
def _flush_histogram(counts, lo, hi, hist_row, seg_lo, seg_hi, seg, NUM_BINS: tl.constexpr):
    tl.atomic_add(hist_row + tl.arange(0, NUM_BINS), counts, mask=counts != 0, sem="relaxed")
    # range of the keys under the prefix: one distinct key there ends the search at once
    tl.atomic_min(seg_lo + seg, tl.min(lo), sem="relaxed")
    tl.atomic_max(seg_hi + seg, tl.max(hi), sem="relaxed")


@triton.jit
def _radix_histogram_kernel(
    tensor_ptrs, tensor_numels, tensor_segments, tile_tensors, tile_starts,
    seg_active, seg_prefix, hist_ptr, seg_lo, seg_hi,
    seg_compact, cand_keys, seg_cand_start, seg_cand_count,
    SHIFT: tl.constexpr, WIDTH: tl.constexpr, IS_FIRST: tl.constexpr,
    NUM_BINS: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr, ALIGNED: tl.constexpr,
    FEW: tl.constexpr, COPY: tl.constexpr,
):
    """One radix level over the data. Segments whose candidates are ready (state 2) are skipped; with
    COPY, segments in state 1 also copy their keys under the prefix to the candidate buffer."""
    tile = tl.program_id(0)
    t = tl.load(tile_tensors + tile)
    seg = tl.load(tensor_segments + t)
    active = tl.load(seg_active + seg)
    if tl.load(seg_compact + seg) == 2:
        active = 0
    if active != 0:
        base = _tensor_base(tensor_ptrs, t, ALIGNED)
        numel = tl.load(tensor_numels + t)
        start = tl.multiple_of(tl.load(tile_starts + tile), BLOCK)
        prefix = tl.load(seg_prefix + seg)
        hist_row = hist_ptr + seg * NUM_BINS
        counts = tl.zeros([NUM_BINS], dtype=tl.int32)
        lo = tl.full([BLOCK], 2147483647, tl.int32)
        hi = tl.full([BLOCK], -2147483648, tl.int32)
        copying = 0
        cand_base = cand_keys
        if COPY:
            copying = tl.load(seg_compact + seg) == 1
            cand_base = cand_keys + tl.load(seg_cand_start + seg)
        for it in range(ITERS):
            offs = start + it * BLOCK + tl.arange(0, BLOCK)
            valid = offs < numel
            key = _ordered_key(tl.load(base + offs, mask=valid, other=0.0))
            counts, lo, hi, take = _histogram_block(
                key, valid, prefix, counts, lo, hi, hist_row, SHIFT, WIDTH, IS_FIRST, NUM_BINS, BLOCK, FEW
            )
            if COPY:
                taken = take.to(tl.int32)
                num_taken = tl.sum(taken)
                if copying & (num_taken > 0):
                    # reserve slots, then write in block order (the candidates' order is irrelevant:
                    # ties are cut by index in the full-data mask pass)
                    slot = tl.atomic_add(seg_cand_count + seg, num_taken, sem="relaxed")
                    tl.store(cand_base + slot + tl.cumsum(taken, 0) - taken, key, mask=take)
        _flush_histogram(counts, lo, hi, hist_row, seg_lo, seg_hi, seg, NUM_BINS)


@triton.jit
def _candidate_histogram_kernel(
    cand_keys, seg_cand_start, seg_cand_count, seg_active, seg_compact, seg_prefix, hist_ptr, seg_lo, seg_hi,
    SHIFT: tl.constexpr, WIDTH: tl.constexpr, IS_FIRST: tl.constexpr, NUM_BINS: tl.constexpr,
    BLOCK: tl.constexpr, ITERS: tl.constexpr, FEW: tl.constexpr,
):
    """A radix level for segments whose candidates are ready (state 2): a histogram of those keys only."""
    seg = tl.program_id(0)
    chunk_start = tl.program_id(1) * BLOCK * ITERS
    count = tl.load(seg_cand_count + seg)
    run = (tl.load(seg_active + seg) != 0) & (tl.load(seg_compact + seg) == 2)
    if run & (chunk_start < count):
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
                key, valid, prefix, counts, lo, hi, hist_row, SHIFT, WIDTH, IS_FIRST, NUM_BINS, BLOCK, FEW
            )
        _flush_histogram(counts, lo, hi, hist_row, seg_lo, seg_hi, seg, NUM_BINS)


@triton.jit
def _radix_select_kernel(
    hist_ptr, seg_lo, seg_hi, seg_active, seg_need, seg_prefix, seg_thresh, seg_need_eq, seg_floor,
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
        # a bracketed segment's candidates are only the keys from its floor up: a bin kept whole
        # keeps them, not the data keys below the floor that share the bin's leading bits
        thresh = tl.maximum(thresh, tl.load(seg_floor + s))
        # all kept (need == total) is marked INT32_MAX so the tie-count pass skips the segment
        need_eq = tl.where(uniform, tl.where(need == total, 2147483647, need), need_eq)
        done = whole_bin | uniform | IS_LAST
        tl.store(seg_active + s, tl.where(done, 0, 1))
        tl.store(seg_thresh + s, thresh)
        tl.store(seg_need_eq + s, need_eq)
        tl.store(seg_prefix + s, prefix)
        tl.store(seg_need + s, need_in)
        state = tl.load(seg_compact + s)
        if state == 1:  # this level's data pass has copied the candidates
            tl.store(seg_compact + s, 2)
        if DECIDE_COMPACT:  # the next pass copies the in_chosen keys under the new prefix if they fit
            if state == 0:
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
    seg_thresh, seg_need_eq, tile_eq_before, kth_keys, pruned_keys, nan_counts, out_ptr,
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
    max_pruned = tl.full([BLOCK], -2147483648, tl.int32)  # callers keeping a threshold need it
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
        max_pruned = tl.maximum(max_pruned, tl.where(valid & ~keep, key, -2147483648))
    tl.atomic_min(kth_keys + t, tl.min(min_kept), sem="relaxed")
    tl.atomic_max(pruned_keys + t, tl.max(max_pruned), sem="relaxed")
    tl.atomic_add(nan_counts + t, tl.sum(nans), sem="relaxed")


@triton.jit
def _bracket_kernel(
    tensor_ptrs, tensor_numels, tensor_segments, tile_tensors, tile_starts,
    seg_active, seg_lo_key, seg_hi_key, seg_above, cand_keys, seg_cand_start, seg_cand_cap, seg_cand_count,
    BLOCK: tl.constexpr, ITERS: tl.constexpr, ALIGNED: tl.constexpr,
):
    """Count the keys above each segment's bracket and copy the keys inside it to the candidates
    (slots past the capacity are counted, not written: the check then rejects the bracket)."""
    tile = tl.program_id(0)
    t = tl.load(tile_tensors + tile)
    seg = tl.load(tensor_segments + t)
    if tl.load(seg_active + seg) != 0:
        base = _tensor_base(tensor_ptrs, t, ALIGNED)
        numel = tl.load(tensor_numels + t)
        start = tl.multiple_of(tl.load(tile_starts + tile), BLOCK)
        lo = tl.load(seg_lo_key + seg)
        hi = tl.load(seg_hi_key + seg)
        cap = tl.load(seg_cand_cap + seg)
        cand_base = cand_keys + tl.load(seg_cand_start + seg)
        above = tl.zeros([BLOCK], dtype=tl.int32)
        for it in range(ITERS):
            offs = start + it * BLOCK + tl.arange(0, BLOCK)
            valid = offs < numel
            key = _ordered_key(tl.load(base + offs, mask=valid, other=0.0))
            above += (valid & (key > hi)).to(tl.int32)
            inside = valid & (key >= lo) & (key <= hi)
            taken = inside.to(tl.int32)
            num_inside = tl.sum(taken)
            if num_inside > 0:
                slot = tl.atomic_add(seg_cand_count + seg, num_inside, sem="relaxed")
                pos = slot + tl.cumsum(taken, 0) - taken
                tl.store(cand_base + pos, key, mask=inside & (pos < cap))
        tl.atomic_add(seg_above + seg, tl.sum(above), sem="relaxed")


@triton.jit
def _bracket_check_kernel(seg_active, seg_need, seg_above, seg_cand_count, seg_cand_cap, seg_compact,
                          seg_lo_key, seg_floor, seg_hits):
    """Per segment: a hit when the k-th key is provably inside the bracket and the candidates fit."""
    s = tl.program_id(0)
    if tl.load(seg_active + s) != 0:
        need = tl.load(seg_need + s)
        above = tl.load(seg_above + s)
        inside = tl.load(seg_cand_count + s)
        hit = (above < need) & (need <= above + inside) & (inside <= tl.load(seg_cand_cap + s))
        if hit:  # radix-select the (need - above)-th largest candidate from level 0
            tl.store(seg_need + s, need - above)
            tl.store(seg_compact + s, 2)
            tl.store(seg_floor + s, tl.load(seg_lo_key + s))
            tl.store(seg_hits + s, tl.load(seg_hits + s) + 1)
        else:  # go on without the bracket; the usual compaction may reuse the buffer
            tl.store(seg_cand_count + s, 0)
