"""`maskedbert srnet` through the sweep launchers on a tiny BERT: local workers give the inline run's cells
bit for bit, a rerun runs nothing, and a real one-node SLURM (tests/slurm_cluster.py) runs every cell as a
job whose `maskedbert report` table equals the inline one. The study: conf_reg (its teacher is the CE
model, so finetune/ce joins and the conf_reg cells wait for it), ft_prune with mask training and IMP."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from maskedbert import cli
from maskedbert.experiments import report
from maskedbert.sweep import load_study, status_cli

TINY = ["--model", "tiny-bert", "--ft-steps", "3", "--prune-steps", "4", "--train-size", "60", "--dev-size", "18",
        "--challenge-per-cell", "3", "--batch-size", "12", "--max-length", "32", "--reset-every", "2",
        "--lr", "1e-3", "--lr-scores", "1e-2"]
STUDY = ["--losses", "conf_reg", "--pipelines", "ft_prune", "--methods", "mask,imp", "--sparsities", "0.5",
         "--imp-per-round", "0.5", *TINY]
CELLS = ["finetune/ce", "finetune/conf_reg", "ft_prune/mask/conf_reg/s0.50", "ft_prune/imp/conf_reg"]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _cells(out: str) -> dict[str, dict]:
    """cells/*.json without the wall-clock `seconds` field."""
    folder = os.path.join(out, "cells")
    return {name: {k: v for k, v in json.loads(_read(os.path.join(folder, name))).items() if k != "seconds"}
            for name in sorted(os.listdir(folder))}


def _masks(out: str) -> dict[str, bytes]:
    folder = os.path.join(out, "masks")
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def _table(out: str) -> list[str]:
    """results.csv without the `seconds` column (the last one)."""
    return [line.rsplit(",", 1)[0] for line in _read(os.path.join(out, "results.csv")).splitlines()]


@pytest.fixture(scope="module")
def inline_study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("inline") / "study")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers below run one thread each
    try:
        assert cli.main(["srnet", "--out", out, *STUDY]) == 0
    finally:
        torch.set_num_threads(before)
    return out


@pytest.mark.slow
def test_study_cells_and_their_needs(inline_study):
    study = load_study(inline_study)
    assert list(study.cells) == CELLS
    assert study.cells["finetune/conf_reg"].needs == ("finetune/ce",)  # the teacher
    assert set(study.cells["ft_prune/mask/conf_reg/s0.50"].needs) == {"finetune/ce", "finetune/conf_reg"}
    (imp,) = [result for cell, result in study.finished() if cell.id == "ft_prune/imp/conf_reg"]
    assert [row["sparsity"] for row in imp] == [0.5]  # an IMP cell's result: every sweep level's row
    assert len(_cells(inline_study)) == 4 and os.path.isfile(os.path.join(inline_study, "teacher_probs.json"))


@pytest.mark.slow
def test_local_workers_match_inline_and_a_rerun_runs_nothing(inline_study, tmp_path):
    out = str(tmp_path / "local")
    argv = [sys.executable, "-m", "maskedbert.cli", "srnet", "--out", out, *STUDY, "--launcher", "local",
            "--workers", "2", "--threads-per-worker", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _cells(out) == _cells(inline_study)
    assert _masks(out) == _masks(inline_study)
    assert _table(out) == _table(inline_study)
    for cell in CELLS:  # ran in a worker process, logged beside its sweep record
        assert os.path.isfile(os.path.join(out, *cell.split("/"), "sweep_worker.log")), cell
    marks = {c: os.stat(os.path.join(out, *c.split("/"), "sweep_done.json")).st_mtime_ns for c in CELLS}
    cells_before = {n: os.stat(os.path.join(out, "cells", n)).st_mtime_ns for n in os.listdir(os.path.join(out, "cells"))}
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("finished earlier, not rerun") == len(CELLS)
    assert "4 finished cell(s) reused" in again.stdout
    assert {c: os.stat(os.path.join(out, *c.split("/"), "sweep_done.json")).st_mtime_ns for c in CELLS} == marks
    assert {n: os.stat(os.path.join(out, "cells", n)).st_mtime_ns for n in cells_before} == cells_before


@pytest.mark.slow
def test_report_status_and_other_settings(inline_study, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "copy")
    shutil.copytree(inline_study, out)
    os.unlink(os.path.join(out, "results.csv"))
    capsys.readouterr()
    assert report.main([out]) == 0
    assert "all 4 cells finished" in capsys.readouterr().out
    assert _read(os.path.join(out, "results.csv")) == _read(os.path.join(inline_study, "results.csv"))
    os.unlink(os.path.join(out, "ft_prune", "imp", "conf_reg", "sweep_done.json"))
    assert report.main([out]) == 0
    assert "3 of 4 cells finished; 1 missing (ft_prune/imp/conf_reg)" in capsys.readouterr().out
    assert not any(",imp," in line for line in _table(out))
    assert status_cli.main([out]) == 0
    assert "4 cells: 3 done, 0 running, 0 failed, 1 pending" in capsys.readouterr().out
    # another setting that changes the cells' results into the same directory: refused, nothing written
    before = _read(os.path.join(out, "sweep.json"))
    assert cli.main(["srnet", "--out", out, *STUDY, "--lr", "5e-3"]) == 2
    assert "different settings (lr)" in capsys.readouterr().err
    assert _read(os.path.join(out, "sweep.json")) == before


def test_launcher_flags_are_checked_before_anything_is_written(tmp_path, capsys):
    out = str(tmp_path / "never")
    assert cli.main(["srnet", "--out", out, *STUDY, "--workers", "2"]) == 2
    assert "--workers applies to --launcher local" in capsys.readouterr().err
    assert cli.main(["srnet", "--out", out, *STUDY, "--launcher", "slurm", "--slurm-time", "0"]) == 2
    assert "--slurm-time" in capsys.readouterr().err
    assert not os.path.exists(out)


# ---- a real SLURM scheduler on this machine (the slurm_cluster fixture: tests/conftest.py) -----------------
@pytest.mark.slow
def test_slurm_runs_every_cell_as_a_job_and_report_matches_inline(inline_study, slurm_cluster, tmp_path, capsys):
    out = str(tmp_path / "slurm-study")
    capsys.readouterr()
    assert cli.main(["srnet", "--out", out, *STUDY, "--launcher", "slurm", "--slurm-cpus-per-task", "1",
                     "--slurm-time", "10"]) == 0
    printed = capsys.readouterr().out
    # one array per level of needs: finetune/ce, then finetune/conf_reg (its teacher), then the pruning cells
    submitted = [int(n) for n in re.findall(r"submitted (\d+) cells as SLURM array job", printed)]
    assert submitted == [1, 1, 2] and "maskedbert report" in printed
    assert not os.path.exists(os.path.join(out, "results.csv"))  # the command returned after submitting
    study = load_study(out)
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline and study.missing():
        states = {study.state(c).status for c in study.missing()}
        assert "failed" not in states, status_cli.describe(out)[1]
        time.sleep(1)
    assert not study.missing(), status_cli.describe(out)[1]
    for cell in CELLS:
        assert json.loads(_read(os.path.join(out, *cell.split("/"), "sweep_done.json")))["job_id"], cell
    assert report.main([out]) == 0
    assert "all 4 cells finished" in capsys.readouterr().out
    assert _cells(out) == _cells(inline_study)
    assert _table(out) == _table(inline_study)
    assert cli.main(["srnet", "--out", out, *STUDY, "--launcher", "slurm"]) == 0
    assert "nothing to submit: 4 of 4 cells done" in capsys.readouterr().out
