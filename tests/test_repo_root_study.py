"""A study started from the repository root: its local workers (`python -m ...` with the root as the
working directory) must import transformers' models, not the checkout's `kernels/` folder as `kernels`."""
import pathlib
import subprocess
import sys

import pytest

from maskedbert.sweep.study import load_study

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_local_workers_from_the_repo_root_finish(tmp_path):
    out_dir = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "maskedbert", "stability", "--preset", "tiny", "--launcher", "local",
                           "--workers", "2", "--out", str(out_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ImportError" not in proc.stdout + proc.stderr
    study = load_study(str(out_dir))
    assert len(study.cells) == 3 and study.missing() == []
