"""Smoke test: bench/topk.py runs in tiny mode, checks every method's counts, prints its table and appends CSV rows."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "topk.py")


@pytest.mark.slow
def test_topk_bench_tiny_mode(tmp_path):
    out_csv = tmp_path / "topk.csv"
    result = subprocess.run(
        [sys.executable, BENCH, "--tiny", "--cpu", "--reps", "2", "--csv", str(out_csv)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "kthvalue loop" in result.stdout and "maskedbert(torch)" in result.stdout
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    # 2 score kinds x (4 per-layer + 3 global methods)
    assert len(rows) == 14
    assert {r["scope"] for r in rows} == {"layer", "global"}
    assert all(r["device"].startswith("cpu") and r["torch"] and r["triton"] for r in rows)
    assert all(float(r["median_ms"]) > 0 for r in rows)
    assert all(int(r["num_tensors"]) == 14 for r in rows)  # 2 layers x 6 matrices + pooler + head
