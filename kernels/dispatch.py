"""Which Triton path runs a masked linear of a given shape.

Paths: "triton_dense" (the prep kernel writes W*M in the compute dtype, cuBLAS does the GEMMs) and
"triton_fused" (a Triton GEMM applies the bit-packed mask while loading W). The weight gradients
always come from the fused dy^T x + straight-through epilogue kernel.

The default is "triton_dense" for every shape. It is NOT yet backed by measurements: no GPU run of
bench/masked_linear.py exists so far; it is the conservative choice because cuBLAS is the fastest
GEMM we know of and the extra prep pass moves only ~N*K*(4+2) bytes. Measured per-shape choices
go in a JSON file named by MASKEDBERT_DISPATCH_TABLE ({"M_BUCKET,N,K,dtype": path}), which the
benchmark can write.
"""
from __future__ import annotations

import functools
import json
import os

import torch

from ._runtime import size_bucket

PATHS = ("triton_dense", "triton_fused")
DEFAULT_PATH = "triton_dense"


@functools.lru_cache(maxsize=1)
def _table(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    with open(path) as f:
        table = json.load(f)
    bad = {k: v for k, v in table.items() if v not in PATHS}
    if bad:
        raise ValueError(f"dispatch table {path} names unknown paths {bad}; expected one of {PATHS}")
    return table


def table_key(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    return f"{size_bucket(M)},{N},{K},{str(dtype).removeprefix('torch.')}"


def choose_path(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    return _table(os.environ.get("MASKEDBERT_DISPATCH_TABLE")).get(table_key(M, N, K, dtype), DEFAULT_PATH)
