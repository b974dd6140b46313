"""Which Triton path runs a masked linear of a given shape, and how its weight gradients are computed.

Paths: "triton_dense" (the prep kernel writes W*M in the compute dtype, cuBLAS does the GEMMs) and
"triton_fused" (a Triton GEMM applies the bit-packed mask while loading W).
Weight gradients (STE): "cublas" (G = dy^T x on cuBLAS with fp32 output, then one elementwise
pass; deterministic) or "triton" (one Triton GEMM with the epilogue fused, split-K atomics).

Defaults: "triton_dense" and "cublas" for every shape. They are NOT backed by GPU measurements
(none exists yet): cuBLAS is the fastest GEMM we know of; the extra passes move ~N*K*(4+2) bytes
(prep) and ~N*K*(4+4+2+4) bytes (epilogue: G, dS, W, dW), small next to the GEMMs at M >= 4096
(an estimate). Measured per-shape choices go in a JSON file named by MASKEDBERT_DISPATCH_TABLE
({"M_BUCKET,N,K,dtype": path} or {..: {"path": .., "ste": ..}}), which the benchmark can write;
MASKEDBERT_STE_GRAD=cublas|triton overrides the STE choice for every shape.
"""
from __future__ import annotations

import functools
import json
import os

import torch

from ._runtime import size_bucket

PATHS = ("triton_dense", "triton_fused")
DEFAULT_PATH = "triton_dense"
STE_IMPLS = ("cublas", "triton")
DEFAULT_STE = "cublas"


@functools.lru_cache(maxsize=1)
def _table(path: str | None) -> dict[str, dict[str, str]]:
    if not path:
        return {}
    with open(path) as f:
        raw = json.load(f)
    table = {k: (v if isinstance(v, dict) else {"path": v}) for k, v in raw.items()}
    bad = {k: v for k, v in table.items()
           if v.get("path", DEFAULT_PATH) not in PATHS or v.get("ste", DEFAULT_STE) not in STE_IMPLS}
    if bad:
        raise ValueError(f"dispatch table {path} names unknown choices {bad}; expected paths from {PATHS} "
                         f"and ste from {STE_IMPLS}")
    return table


def table_key(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    return f"{size_bucket(M)},{N},{K},{str(dtype).removeprefix('torch.')}"


def _environ_reader():
    """A function name -> os.environ.get(name), read on every call (a user may set a variable at
    any time). These variables are read per masked layer per step, and os.environ.get costs ~0.6 us
    for a missing name (a KeyError raised and caught inside Mapping.get): read CPython's mapping
    behind os.environ (`_data`, with its key encoding) instead where it exists."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    encodekey = getattr(environ, "encodekey", None)
    decodevalue = getattr(environ, "decodevalue", None)
    if not (isinstance(data, dict) and callable(encodekey) and callable(decodevalue)):
        return environ.get
    encoded: dict[str, object] = {}

    def get(name: str) -> str | None:
        if os.environ is not environ:  # replaced wholesale (a test's patch): ask the new one
            return os.environ.get(name)
        key = encoded.get(name)
        if key is None:
            key = encoded[name] = encodekey(name)
        value = data.get(key)
        return None if value is None else decodevalue(value)

    return get


_getenv = _environ_reader()


def choose_path(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    table = _table(_getenv("MASKEDBERT_DISPATCH_TABLE"))
    if not table:  # no per-call key formatting unless a table is in use
        return DEFAULT_PATH
    return table.get(table_key(M, N, K, dtype), {}).get("path", DEFAULT_PATH)


def choose_ste(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    forced = _getenv("MASKEDBERT_STE_GRAD")
    if forced:
        if forced not in STE_IMPLS:
            raise ValueError(f"MASKEDBERT_STE_GRAD must be one of {STE_IMPLS}, got {forced!r}")
        return forced
    table = _table(_getenv("MASKEDBERT_DISPATCH_TABLE"))
    if not table:
        return DEFAULT_STE
    return table.get(table_key(M, N, K, dtype), {}).get("ste", DEFAULT_STE)
