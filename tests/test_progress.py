"""Progress output: a bar only on a terminal; plain lines (no carriage returns) in logs and pipes."""
import io
import subprocess
import sys

from maskedbert.progress import LineProgress, progress_bar, track


def test_lines_at_each_tenth_and_the_end():
    out = io.StringIO()
    bar = LineProgress(25, desc="run", unit="step", stream=out)
    for i in range(25):
        bar.set_postfix(loss=f"{i:.1f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "run: 2/25 step (8%) loss=1.0"
    assert lines[-1] == "run: 25/25 step (100%) loss=24.0"
    assert len(lines) == 13  # every 2 steps, then the end


def test_resumed_run_counts_from_its_start_and_close_prints_the_last_state():
    out = io.StringIO()
    bar = LineProgress(100, desc="x", initial=40, stream=out)
    bar.update(3)
    bar.close()
    assert out.getvalue().splitlines() == ["x: 43/100 it (43%)"]


def test_disabled_prints_nothing(capsys):
    bar = progress_bar(10, desc="quiet", disable=True)
    for _ in range(10):
        bar.update(1)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_not_a_terminal_gives_plain_lines():
    code = ("from maskedbert.progress import track\n"
            "for _ in track(range(30), desc='loop', unit='batch'):\n    pass\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr
    assert out.stderr.splitlines()[-1] == "loop: 30/30 batch (100%)"


def test_track_yields_every_item():
    assert list(track(iter([3, 1, 2]), desc="t")) == [3, 1, 2]
