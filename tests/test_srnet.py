"""`maskedbert srnet` end to end on a tiny model: every pipeline, method and loss; outputs; resume."""
import csv
import json
import os

import pytest
import torch

from maskedbert import pruning
from maskedbert.experiments.srnet import pipelines as srnet_pipelines
from maskedbert.experiments.srnet import options as srnet
from maskedbert.errors import UsageError
from maskedbert.masks import read_metadata
from maskedbert.experiments.srnet import command as srnet_command


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--model", "tiny-bert", "--ft-steps", "3", "--prune-steps", "4", "--train-size", "60", "--dev-size", "18",
        "--challenge-per-cell", "3", "--batch-size", "12", "--max-length", "32", "--reset-every", "2",
        "--lr", "1e-3", "--lr-scores", "1e-2"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("srnet"))
    # IMP prunes 30% of the original weights per round here (the default 10% is tested in test_pruning)
    argv = ["--out", out, "--losses", "ce,poe,reweight,conf_reg", "--sparsities", "0.3,0.6", "--oracle",
            "--imp-per-round", "0.3", *TINY]
    assert srnet_command.main(argv) == 0
    return out, argv


def _rows(out):
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_every_pipeline_method_and_loss_has_a_row(full_run):
    out, _ = full_run
    rows = _rows(out)
    cells = {(r["pipeline"], r["method"], r["loss"], float(r["sparsity"])) for r in rows}
    losses = ("ce", "poe", "reweight", "conf_reg")
    expected = {("finetune", "dense", loss, 0.0) for loss in losses}
    for s in (0.3, 0.6):
        for loss in losses:
            expected |= {("ft_prune", m, loss, s) for m in ("mask", "imp")}
            expected |= {("prune_ft", m, loss, s) for m in ("mask", "imp")}
            expected.add(("mask_pretrained", "mask", loss, s))
        expected.add(("oracle", "mask", "ce", s))
    assert cells == expected
    for r in rows:
        assert 0.0 <= float(r["id_accuracy"]) <= 1.0 and 0.0 <= float(r["ood_accuracy"]) <= 1.0
        assert float(r["measured_sparsity"]) == pytest.approx(float(r["sparsity"]), abs=2e-3)
        if r["method"] == "mask":
            assert 0.0 <= float(r["mask_change"]) <= 1.0
    # lr_scores 1e-2 for a few steps moves scores past the threshold: masks leave their magnitude init
    assert any(float(r["mask_change"]) > 0 for r in rows if r["method"] == "mask")


@pytest.mark.slow
def test_outputs_written(full_run):
    out, _ = full_run
    for name in ("results.csv", "results.md", "srnet_sparsity.png", "config.json", "bias_probs.json",
                 "teacher_probs.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["sparsities"] == [0.3, 0.6] and config["losses"] == ["ce", "poe", "reweight", "conf_reg"]
    with open(os.path.join(out, "results.md")) as f:
        assert f.readline().startswith("| pipeline | method | loss | sparsity")


@pytest.mark.slow
def test_saved_masks_have_the_requested_sparsity(full_run):
    out, _ = full_run
    masks = os.path.join(out, "masks")
    for name in os.listdir(masks):
        level = float(name.rsplit("-s", 1)[1][:4]) if "-level" not in name else float(name.split("level")[1][:4])
        sparsity = read_metadata(os.path.join(masks, name))["sparsity"]
        assert sparsity == pytest.approx(level, abs=2e-3), name
    # IMP saved a mask at every level of its schedule (0.6 is the largest sweep level); (b)'s search is
    # named by its search loss (the cell's: --imp-search-loss same), its tickets fine-tune from these
    levels = sorted(n for n in os.listdir(masks) if n.startswith("prune_ft-imp-search-ce-level"))
    assert [n.split("level")[1][:4] for n in levels] == ["0.30", "0.60"]


def test_imp_sweep_levels_join_the_round_schedule(tmp_path):
    out = str(tmp_path / "imp")
    argv = ["--out", out, "--losses", "ce", "--pipelines", "prune_ft", "--methods", "imp", "--sparsities", "0.25",
            "--imp-per-round", "0.1", *TINY]
    assert srnet_command.main(argv) == 0
    levels = sorted(n.split("level")[1][:4] for n in os.listdir(os.path.join(out, "masks")) if "-level" in n)
    assert levels == ["0.10", "0.20", "0.25"]
    (row,) = [r for r in _rows(out) if r["method"] == "imp"]
    assert float(row["measured_sparsity"]) == pytest.approx(0.25, abs=2e-3)


@pytest.mark.slow
def test_rerun_resumes_without_training(full_run, monkeypatch):
    out, argv = full_run
    before = _rows(out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was rerun")

    monkeypatch.setattr(pruning, "train_steps", no_training)
    assert srnet_command.main(argv) == 0
    assert _rows(out) == before


@pytest.mark.slow
def test_interrupted_sweep_reruns_only_missing_cells(full_run, monkeypatch, tmp_path):
    out, argv = full_run
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    os.unlink(os.path.join(copy, "cells", "mask_pretrained-mask-poe-s0.60.json"))
    calls = []
    real = pruning.train_steps

    def counting(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pruning, "train_steps", counting)
    assert srnet_command.main(["--out", copy, *argv[2:]]) == 0
    assert calls == ["mask_pretrained-mask-poe-s0.60"]
    assert len(_rows(copy)) == len(_rows(out))


def test_bias_and_teacher_probabilities_follow_ids_and_model_label_order(tmp_path):
    cfg = srnet.parse_args(["--out", str(tmp_path), "--losses", "ce", *TINY])
    runner = srnet.SRNetRunner(cfg, log=lambda *_: None)
    runner.label_map = [2, 0, 1]  # pretend the head orders labels differently from the dataset
    ids = runner._encoded.example_ids
    bias = runner.bias_probs()
    fields = runner.train_dataset("poe").extra_fields["bias_probs"]
    for row, example_id in zip(fields.tolist()[:10], ids[:10]):
        assert row[2] == pytest.approx(bias[example_id][0]) and row[0] == pytest.approx(bias[example_id][1])


def test_prune_start_and_bad_arguments(tmp_path):
    with pytest.raises(UsageError, match="--pipelines"):
        srnet.parse_args(["--pipelines", "nope"])
    with pytest.raises(UsageError, match="--sparsities"):
        srnet.parse_args(["--sparsities", "1.5"])
    with pytest.raises(ValueError, match="unknown loss"):
        srnet.SRNetConfig(losses=["focal"])
    cfg = srnet.parse_args(["--prune-start", "ce", "--losses", "poe"])
    assert cfg.prune_start == "ce"


def test_collapsed_nli_loss_is_binary_cross_entropy():
    logits = torch.randn(5, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 1])
    loss = srnet_pipelines._collapsed_nli_loss(0)(logits, {"labels": labels})
    p = torch.softmax(logits, 1)
    p_label = torch.where(labels == 0, p[:, 0], p[:, 1] + p[:, 2])
    assert loss.item() == pytest.approx(-p_label.log().mean().item())


@pytest.mark.slow
def test_resume_refuses_a_changed_config(full_run):
    out, argv = full_run
    with pytest.raises(ValueError, match="different settings.*lr_scores"):
        srnet_command.main(["--out", out, *argv[2:], "--lr-scores", "0.5"])


def test_prune_from_an_intermediate_checkpoint_and_rewind_to_it(tmp_path):
    out = str(tmp_path / "a")
    argv = ["--out", out, "--losses", "ce", "--pipelines", "ft_prune", "--methods", "mask", "--sparsities", "0.5",
            "--save-ft-steps", "2", *TINY]
    assert srnet_command.main(argv) == 0
    step2 = os.path.join(out, "checkpoints", "finetuned-ce-step2.safetensors")
    assert os.path.isfile(step2)
    out_b = str(tmp_path / "b")
    argv_b = ["--out", out_b, "--losses", "ce", "--pipelines", "ft_prune", "--methods", "imp,mask",
              "--sparsities", "0.2", "--prune-start", step2, "--rewind-to", step2, "--train-classifier", "yes", *TINY]
    assert srnet_command.main(argv_b) == 0
    assert {(r["method"], r["sparsity"]) for r in _rows(out_b)} >= {("imp", "0.2000"), ("mask", "0.2000")}


def test_interrupted_imp_resumes_at_its_next_round(tmp_path, monkeypatch):
    """Killed during round 2, a rerun trains rounds 2 and 3 only and ends where an unbroken run does."""
    base = ["--losses", "ce", "--pipelines", "prune_ft", "--methods", "imp", "--sparsities", "0.25",
            "--imp-per-round", "0.1", *TINY]
    whole = str(tmp_path / "whole")
    assert srnet_command.main(["--out", whole, *base]) == 0

    out = str(tmp_path / "broken")
    calls = []
    real = pruning.train_steps

    def dies_in_round_two(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        if kwargs.get("desc", "").endswith("round 2") and len(calls) < 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pruning, "train_steps", dies_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        srnet_command.main(["--out", out, *base])
    assert os.path.isfile(os.path.join(out, "resume", "prune_ft-imp-search-ce.pt"))
    calls.clear()
    calls.extend([None] * 10)  # let round 2 through this time
    assert srnet_command.main(["--out", out, *base]) == 0
    # the search resumes at round 2 (its last level needs no training), then the ticket is fine-tuned
    assert [c for c in calls if c] == ["IMP prune_ft ce round 2", "prune_ft-imp-ce-s0.25 ticket"]
    assert not os.path.exists(os.path.join(out, "resume", "prune_ft-imp-search-ce.pt"))
    (a,), (b,) = ([r for r in _rows(d) if r["method"] == "imp"] for d in (whole, out))
    for column in ("id_accuracy", "ood_accuracy", "measured_sparsity"):
        assert a[column] == b[column], column

