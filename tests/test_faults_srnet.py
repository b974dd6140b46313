"""srnet under faults: mask training stopped by SIGTERM mid-run resumes to the cells and masks of an
uninterrupted study; an emptied shared fine-tuned checkpoint is set aside and rebuilt; a pickle planted
as the stopped run's checkpoint runs nothing. Two tiny-bert studies, seconds each."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from maskedbert import cli, pruning
from maskedbert.sweep import load_study

STUDY = ["--model", "tiny-bert", "--ft-steps", "4", "--prune-steps", "6", "--train-size", "32", "--dev-size", "8",
         "--challenge-per-cell", "2", "--batch-size", "8", "--max-length", "16", "--reset-every", "2", "--eval-every",
         "2", "--select-after", "0.3", "--losses", "ce", "--pipelines", "ft_prune", "--methods", "mask",
         "--sparsities", "0.5", "--lr", "1e-3", "--lr-scores", "1e-2"]


def _cells(out):
    folder = os.path.join(out, "cells")
    return {name: {k: v for k, v in json.load(open(os.path.join(folder, name))).items() if k != "seconds"}
            for name in sorted(os.listdir(folder))}


def _masks(out):
    folder = os.path.join(out, "masks")
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("srnet") / "reference")
    assert cli.main(["srnet", "--out", out, *STUDY]) == 0
    return out


def _stop_mask_training_at(monkeypatch, stop_step):
    original = pruning.MaskSparsityController.__call__  # mask training only (dense runs select too)
    fired = []

    def call(self, step, *args):
        original(self, step, *args)
        if step == stop_step and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM at the time limit: acted on after this step

    monkeypatch.setattr(pruning.MaskSparsityController, "__call__", call)
    return fired


def test_mask_training_stopped_mid_run_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch, capsys, reference):
    out = str(tmp_path / "study")
    fired = _stop_mask_training_at(monkeypatch, 3)
    assert cli.main(["srnet", "--out", out, *STUDY]) == 130
    assert fired == [3]
    run_dirs = [d for d in os.listdir(os.path.join(out, "logs")) if os.path.exists(os.path.join(out, "logs", d,
                                                                                              "checkpoint.pt"))]
    assert len(run_dirs) == 1, run_dirs  # the stopped mask training's; the dense run's was dropped once saved
    checkpoint = os.path.join(out, "logs", run_dirs[0], "checkpoint.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 3 and set(state["stateful"]) == {"sparsity_controller", "mask_selector"}
    study = load_study(out)
    pending = [c for c in study.cells if not study.is_done(c)]
    assert len(pending) == 1 and "resumes at step 3 of 6" in study.state(pending[0]).detail
    # a damaged shared artifact: the fine-tuned CE model the mask cell starts from
    (tmp_path / "study" / "checkpoints" / "finetuned-ce.safetensors").write_bytes(b"")
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(["srnet", "--out", out, *STUDY]) == 0
    printed = capsys.readouterr().out
    assert "finetuned-ce.safetensors is unreadable" in printed and "rebuilding it" in printed, printed
    assert _cells(out) == _cells(reference)
    assert _masks(out) == _masks(reference)
    assert not os.path.exists(checkpoint)  # retention: dropped once the cell is recorded


def test_a_pickle_planted_as_the_stopped_runs_checkpoint_runs_nothing(tmp_path, monkeypatch, reference):
    out = str(tmp_path / "study")
    _stop_mask_training_at(monkeypatch, 3)
    assert cli.main(["srnet", "--out", out, *STUDY]) == 130
    monkeypatch.undo()
    logs = os.path.join(out, "logs")
    [run] = [d for d in os.listdir(logs) if os.path.exists(os.path.join(logs, d, "checkpoint.pt"))]
    marker = tmp_path / "code-ran"
    torch.save({"model": _Planted(marker), "global_step": 3}, os.path.join(logs, run, "checkpoint.pt"))
    os.makedirs(os.path.join(out, "resume"), exist_ok=True)
    torch.save({"model": _Planted(marker)}, os.path.join(out, "resume", "ft_prune-imp-ce.pt"))
    with pytest.warns(RuntimeWarning, match="checkpoint.pt is unreadable"):
        assert cli.main(["srnet", "--out", out, *STUDY]) == 0
    assert not marker.exists()
    assert _cells(out) == _cells(reference)  # started over from step 0: the same cells
