"""bench/gpu_session.sh --dry-run: every command the one-call GPU session would make is checked on CPU
(arguments parse, the gpu-marked tests collect, output names are plain files directly under $OUT)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_session.sh"


def test_dry_run_checks_every_command(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "dry run: ok" in text and "PROBLEM" not in text, text
    for script in ("masked_linear.py", "topk.py", "train_step.py"):
        assert f"ok bench/{script}" in text, text
    assert "tests collected" in text, text
    assert not any(out.iterdir())  # a dry run writes nothing


def test_unknown_option_is_refused(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--bogus"], cwd=ROOT, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
