"""`maskedbert stability` through the sweep launchers, on the tiny preset (3 seeds, 8 steps each):
local workers give the inline run's cells bit for bit, a killed launch resumes without rerunning
finished cells, and a real one-node SLURM (tests/slurm_cluster.py) runs every cell as a job whose
`maskedbert report` table equals the inline one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from maskedbert.experiments import report
from maskedbert.sweep import load_study, status_cli
from maskedbert.experiments.stability import command as stability_command

# 64 examples, batch 16, 2 epochs: 8 steps, a checkpoint every 2 (so a kill lands between checkpoints)
TINY = ["--preset", "tiny", "--seeds", "1,2,3", "--no-progress", "--set", "train_limit=64", "--set", "dev_limit=32",
        "--set", "num_epochs=2", "--set", "lr=3e-3", "--set", "checkpoint_every=2", "--set", "log_every=1"]
CELLS = [f"default/seed_{s}" for s in (1, 2, 3)]
TESTS = os.path.dirname(os.path.abspath(__file__))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskedbert.cli", *args]


def _worker_env() -> dict[str, str]:
    # one thread per process, as in the inline run below: results then match bit for bit
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def inline_study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("inline") / "study")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert stability_command.main(TINY + ["--out", out]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _assert_same_cells(out: str, reference: str) -> None:
    for cell in CELLS:
        assert _read(os.path.join(out, cell, "result.json")) == _read(os.path.join(reference, cell, "result.json")), cell
        ours = torch.load(os.path.join(out, cell, "checkpoint.pt"), weights_only=False)["model"]
        theirs = torch.load(os.path.join(reference, cell, "checkpoint.pt"), weights_only=False)["model"]
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), cell


def _assert_no_half_written_cell(out: str) -> None:
    """A cell is done (done marker whose result is the run's result.json) or not done (no marker)."""
    for cell in CELLS:
        marker = os.path.join(out, cell, "sweep_done.json")
        if os.path.exists(marker):
            assert json.loads(_read(marker))["result"] == json.loads(_read(os.path.join(out, cell, "result.json")))


def _wait_until_group_gone(pgid: int, timeout: float = 60.0) -> None:
    """SIGKILL lands when a process is next scheduled: on a loaded machine a worker can outlive the wait()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                alive.append(entry)
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of the killed launch still run: {alive}")


def _held_env(out: str, markers: str) -> dict[str, str]:
    """Workers that stop after a checkpoint once another cell is done, each leaving a file in `markers`
    (tests/hold_after_checkpoint/)."""
    path = os.pathsep.join(p for p in (os.path.join(TESTS, "hold_after_checkpoint"), os.environ.get("PYTHONPATH"))
                           if p)
    return {**_worker_env(), "PYTHONPATH": path, "MASKEDBERT_TEST_HOLD_STUDY": out,
            "MASKEDBERT_TEST_HOLD_MARKERS": markers}


@pytest.mark.slow
def test_local_workers_match_inline_and_a_killed_launch_resumes(inline_study, tmp_path):
    out = str(tmp_path / "local")
    argv = _cli("stability", *TINY, "--out", out, "--launcher", "local", "--workers", "2")
    markers = tmp_path / "held"
    markers.mkdir()
    launch = subprocess.Popen(argv, env=_held_env(out, str(markers)), start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    # once one cell is done, a cell that writes a checkpoint holds there (mid-run) until killed: wait for the
    # last cell to hold, then kill the launcher and its workers (the state holds: no race with the poll)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and launch.poll() is None and "default_seed_3" not in os.listdir(markers):
        time.sleep(0.5)
    assert launch.poll() is None, "the launch ended before it could be killed:\n" + launch.stdout.read()
    assert "default_seed_3" in os.listdir(markers), "the last cell never held after a checkpoint"
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait()
    _wait_until_group_gone(launch.pid)
    _assert_no_half_written_cell(out)
    finished = {c: os.stat(os.path.join(out, c, "sweep_done.json")).st_mtime_ns
                for c in CELLS if os.path.exists(os.path.join(out, c, "sweep_done.json"))}
    assert 1 <= len(finished) < len(CELLS)
    interrupted = [c for c in CELLS if c not in finished and os.path.exists(os.path.join(out, c, "checkpoint.pt"))]
    assert status_cli.main([out]) == 0

    rerun = subprocess.run(argv, env=_worker_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert rerun.stdout.count("finished earlier, not rerun") == len(finished)
    for cell, mtime in finished.items():  # never run again
        assert os.stat(os.path.join(out, cell, "sweep_done.json")).st_mtime_ns == mtime
    resumed = [c for c in CELLS if '"event": "resumed"' in _read(os.path.join(out, c, "log.jsonl"))]
    assert resumed == interrupted  # killed mid-run: continued from the checkpoint (finished ones untouched)
    _assert_same_cells(out, inline_study)  # uninterrupted and resumed cells alike
    for table in ("runs.csv", "summary.csv"):
        assert _read(os.path.join(out, table)) == _read(os.path.join(inline_study, table))


@pytest.mark.slow
def test_report_and_status_from_finished_cells(inline_study, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "copy")
    shutil.copytree(inline_study, out)
    os.unlink(os.path.join(out, "summary.csv"))
    assert report.main([out]) == 0
    assert _read(os.path.join(out, "summary.csv")) == _read(os.path.join(inline_study, "summary.csv"))
    os.unlink(os.path.join(out, "default/seed_2/sweep_done.json"))
    capsys.readouterr()
    assert report.main([out]) == 0
    assert "2 of 3 cells finished; 1 missing (default/seed_2)" in capsys.readouterr().out
    assert "| 2 |" in _read(os.path.join(out, "results.md")).split("## Per run")[0]  # runs: 2
    assert status_cli.main([out]) == 0
    assert "3 cells: 2 done, 0 running, 0 failed, 1 pending" in capsys.readouterr().out
    # other settings into the same directory: refused, nothing changed
    before = _read(os.path.join(out, "sweep.json"))
    assert stability_command.main(TINY + ["--out", out, "--set", "lr=1e-3"]) == 2
    assert "holds a study with other settings (changed: base.lr)" in capsys.readouterr().err
    assert _read(os.path.join(out, "sweep.json")) == before


# ---- a real SLURM scheduler on this machine (the slurm_cluster fixture: tests/conftest.py) -------------
@pytest.mark.slow
def test_slurm_runs_every_cell_as_a_job_and_report_matches_inline(inline_study, slurm_cluster, tmp_path, capsys):
    out = str(tmp_path / "slurm-study")
    capsys.readouterr()
    assert stability_command.main(TINY + ["--out", out, "--launcher", "slurm", "--slurm-cpus-per-task", "1",
                                  "--slurm-time", "10", "--slurm-setup", "echo setup line ran"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 3 cells as SLURM array job" in printed and "maskedbert report" in printed
    study = load_study(out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and study.missing():
        states = {study.state(c).status for c in study.missing()}
        assert "failed" not in states, status_cli.describe(out)[1]
        time.sleep(1)
    assert not study.missing(), status_cli.describe(out)[1] + "\n" + _read(os.path.join(
        slurm_cluster["folder"], "log", "slurmctld.log"))[-2000:]
    for cell in CELLS:
        done = json.loads(_read(os.path.join(out, cell, "sweep_done.json")))
        assert done["job_id"] and "setup line ran" in _read(done["log"])
    assert report.main([out]) == 0
    assert "all 3 cells finished" in capsys.readouterr().out
    _assert_same_cells(out, inline_study)
    for table in ("runs.csv", "summary.csv"):
        assert _read(os.path.join(out, table)) == _read(os.path.join(inline_study, table))
    # resubmitting the same command submits nothing: every cell is done
    assert stability_command.main(TINY + ["--out", out, "--launcher", "slurm"]) == 0
    assert "nothing to submit: 3 of 3 cells done" in capsys.readouterr().out
