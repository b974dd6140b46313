"""How the CLI behaves as a shell tool: `python -m maskedbert`, and quiet on a closed pipe."""
import os
import subprocess
import sys

import pytest

from maskedbert.cli import version_text


def _env():
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def test_python_dash_m_maskedbert_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "maskedbert", "--version"], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == version_text()


@pytest.mark.parametrize("argv", [["stability", "--list-presets"], ["srnet", "--help"], ["--help"]])
def test_closed_stdout_is_quiet(argv):
    """`maskedbert ... | head`: the reader is gone before the first write; no traceback, exit 0 or 141."""
    proc = subprocess.Popen([sys.executable, "-m", "maskedbert", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 141), err.decode()
    assert b"Traceback" not in err and b"internal error" not in err, err.decode()
