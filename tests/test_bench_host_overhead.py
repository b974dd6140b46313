"""bench/host_overhead.py runs end to end on CPU (GPU code path, launches stubbed) and counts launches."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton  # the GPU code path imports the Triton kernel modules

ROOT = Path(__file__).resolve().parents[1]


def test_host_overhead_counts_launches_per_layer(tmp_path):
    out = tmp_path / "host.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "host_overhead.py"), "--iters", "5", "--repeats", "1",
                           "--csv", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["case"]: r for r in csv.DictReader(out.read_text().splitlines())}
    # per layer and step: prep + epilogue (dense path); prep, two masked GEMMs, epilogue (fused)
    assert rows["MaskedLinear triton_dense"]["triton_launches"] == "2"
    assert rows["MaskedLinear triton_fused"]["triton_launches"] == "4"
    assert rows["MaskedLinear torch twin"]["triton_launches"] == "0"
    # the dense path's GEMMs: forward (addmm), dx and G (mm) -- the same three a dense layer runs
    assert rows["MaskedLinear triton_dense"]["torch_ops"].split()[:3] == ["addmm", "mm", "mm"]
    assert float(rows["F.linear (W, b train)"]["vs_F.linear"]) == 1.0
    for r in rows.values():
        assert float(r["median_us"]) > 0 and r["device"].startswith("cpu") and r["torch"] and r["triton"]


def test_refuses_the_interpreter():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "host_overhead.py")], cwd=ROOT,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "TRITON_INTERPRET" in proc.stderr
