"""Host side of the Triton radix select (kernels in topk_radix.py): per-tensor tables, launches.

The kernels are looked up on the module at launch time (`radix.<kernel>`), so tests can wrap them;
topk_radix (and with it triton) is imported only when a launch runs.
"""
from __future__ import annotations

import functools

import torch

from ._runtime import check_triton_tensors, cuda_device_of, interpreting, require_triton
from .topk_keys import (CANDIDATE_FRACTION, CANDIDATE_MIN, FEW_MATCHES, INT32_MAX, INT32_MIN, NUM_BINS,  # noqa: F401
                        RADIX_LEVELS, _kth_values, _pruned_max_values, float_to_key, key_to_float)


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
    """Rows: active, need, prefix, thresh, need_eq, floor (one column per segment; floor: the lowest
    key a bracketed segment may keep). Cached: callers clone it, so a training loop pays a
    device-to-device copy per call instead of a host-to-device one."""
    rows = [[], [], [], [], [], []]
    for n, k in zip(numels, keep):
        if k == 0:  # keep nothing: no key is above INT32_MAX and no equal key may be kept
            state = (0, 0, 0, INT32_MAX, 0)
        elif k == n:  # keep everything
            state = (0, 0, 0, INT32_MIN, INT32_MAX)
        else:
            state = (1, k, 0, 0, 0)
        for row, value in zip(rows, state + (INT32_MIN,)):
            row.append(value)
    return torch.tensor(rows, dtype=torch.int32, device=device)


def topk_select_triton(tensors: list[torch.Tensor], keep: list[int], scope: str, names: list[str],
                       bracket=None, hits: torch.Tensor | None = None, pruned_max: bool = False):
    """Triton radix select. `keep`: kept count per tensor (scope="layer") or [total] ("global").

    `bracket`: optional (lo, hi) float tensors, one entry per tensor, believed to hold each k-th
    value (scope="global": their min and max bound the one k-th value); see topk_radix step 0.
    `hits`: optional int32 tensor, one entry per segment, incremented on the device where the
    bracket held. Returns (list of bool masks, viewing one flat buffer; float32 kth values per tensor),
    plus the largest pruned value per tensor (-inf where nothing is pruned) when `pruned_max`.
    """
    require_triton()
    check_triton_tensors(**dict(zip(names, tensors)))
    with cuda_device_of(tensors[0]):
        return _topk_select_triton(tensors, keep, scope, names, bracket, hits, pruned_max)


def _topk_select_triton(tensors, keep, scope, names, bracket, hits, pruned_max):
    from . import topk_radix as radix

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
    active, need, prefix, thresh, need_eq, floor = state.unbind(0)
    num_seg = len(seg_numels)
    out = torch.empty(lay["total"], dtype=torch.uint8, device=device)
    kth_keys = torch.full((len(flats),), INT32_MAX, dtype=torch.int32, device=device)
    pruned_keys = torch.full((len(flats),), INT32_MIN, dtype=torch.int32, device=device)
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
        if bracket is not None:
            lo_key, hi_key = _bracket_keys(bracket, scope)
            above = torch.zeros(num_seg, dtype=torch.int32, device=device)
            if hits is None:
                hits = torch.zeros(num_seg, dtype=torch.int32, device=device)
            radix._bracket_kernel[(num_tiles,)](
                *common, active, lo_key, hi_key, above, cand_keys, cand_start, cand_cap, cand_count,
                BLOCK=block, ITERS=iters, ALIGNED=aligned,
            )
            radix._bracket_check_kernel[(num_seg,)](
                active, need, above, cand_count, cand_cap, compact, lo_key, floor, hits
            )
        last = levels - 1
        for level, (shift, width) in enumerate(RADIX_LEVELS):
            lo, hi = key_range[0, level], key_range[1, level]
            radix._radix_histogram_kernel[(num_tiles,)](
                *common, active, prefix, hist[level], lo, hi, *cand,
                SHIFT=shift, WIDTH=width, IS_FIRST=level == 0, NUM_BINS=NUM_BINS, BLOCK=block, ITERS=iters,
                ALIGNED=aligned, FEW=FEW_MATCHES, COPY=level == last - 1,
            )
            # candidates are ready from level 0 where a bracket held, else at most for the last level
            if level == last or bracket is not None:
                chunks = -(-max(max_cap, 1) // (block * iters))
                radix._candidate_histogram_kernel[(num_seg, chunks)](
                    cand_keys, cand_start, cand_count, active, compact, prefix, hist[level], lo, hi,
                    SHIFT=shift, WIDTH=width, IS_FIRST=level == 0, NUM_BINS=NUM_BINS, BLOCK=block,
                    ITERS=iters, FEW=FEW_MATCHES,
                )
            radix._radix_select_kernel[(num_seg,)](
                hist[level], lo, hi, active, need, prefix, thresh, need_eq, floor, compact, cand_cap,
                SHIFT=shift, WIDTH=width, IS_LAST=level == last, NUM_BINS=NUM_BINS,
                DECIDE_COMPACT=level == last - 2,
            )
        tile_eq = torch.empty(num_tiles, dtype=torch.int32, device=device)
        radix._tie_count_kernel[(num_tiles,)](
            *common, thresh, need_eq, tile_eq, BLOCK=block, ITERS=iters, ALIGNED=aligned,
        )
        # equal keys in earlier tiles of the same segment (tiles are in flat-index order)
        before = torch.cumsum(tile_eq, 0, dtype=torch.int64) - tile_eq
        before = (before - before[lay["seg_first_tile"]][lay["tile_segments"]]).to(torch.int32)
        radix._mask_kernel[(num_tiles,)](
            *common[:3], lay["out_offsets"], *common[3:], thresh, need_eq, before, kth_keys, pruned_keys, nan_counts, out,
            BLOCK=block, ITERS=iters, ALIGNED=aligned,
        )
    _raise_on_nan(nan_counts, names)
    masks = [m.view(t.shape) for m, t in zip(out.view(torch.bool).split(numels), tensors)]
    if pruned_max:
        return masks, _kth_values(kth_keys, scope), _pruned_max_values(pruned_keys, scope)
    return masks, _kth_values(kth_keys, scope)


def _bracket_keys(bracket, scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) floats -> int32 ordered keys per segment, on the device (no host synchronisation)."""
    lo, hi = (b.detach().reshape(-1).to(torch.float32) for b in bracket)
    if scope == "global":
        lo, hi = lo.min().reshape(1), hi.max().reshape(1)
    return float_to_key(lo).contiguous(), float_to_key(hi).contiguous()


def _raise_on_nan(nan_counts: torch.Tensor, names: list[str]) -> None:
    bad = torch.nonzero(nan_counts).flatten().tolist()  # the one host synchronisation
    if bad:
        raise ValueError(f"{names[bad[0]]} contains {int(nan_counts[bad[0]])} NaN values; scores must not be NaN")
