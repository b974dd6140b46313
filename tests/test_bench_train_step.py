"""bench/train_step.py --cpu-smoke runs every mode end to end and writes its CSV and plot."""
import csv
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_train_step_cpu_smoke(tmp_path):
    out_csv, out_png = tmp_path / "ts.csv", tmp_path / "ts.png"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "train_step.py"), "--cpu-smoke",
           "--csv", str(out_csv), "--plot", str(out_png)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(out_csv.open()))
    modes = {r["mode"] for r in rows}
    assert {"dense", "eager_ref_50", "mb_reset_50", "mb_topk_50", "imp_50"} <= modes
    assert all(float(r["median_ms"]) > 0 for r in rows)
    assert next(r for r in rows if r["mode"] == "dense")["ratio_to_dense"] == "1.0"
    assert out_png.stat().st_size > 0
