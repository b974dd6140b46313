"""srnet's defaults do what Liu et al. (2022) describe (docs/PROTOCOLS.md), checked on a tiny BERT."""
import json
import os

import pytest
import torch

from maskedbert import pruning
from maskedbert.experiments.srnet import options as srnet
from maskedbert.experiments.srnet.config import SRNetConfig
from maskedbert.experiments.srnet import command as srnet_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--model", "tiny-bert", "--ft-steps", "3", "--prune-steps", "4", "--train-size", "60", "--dev-size", "18",
        "--challenge-per-cell", "3", "--batch-size", "12", "--max-length", "32", "--reset-every", "2",
        "--lr", "1e-2", "--lr-scores", "1e-2"]


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith("scores")}


@pytest.fixture
def recorded_training(monkeypatch):
    """Every training run's desc, parameters before and after, and the masks it trained under."""
    runs = []
    real = pruning.train_steps

    def recording(model, *args, **kwargs):
        before = _snapshot(model)
        masks = {n: m.mask().clone() for n, m in pruning.masked_modules(model).items()}
        result = real(model, *args, **kwargs)
        runs.append({"desc": kwargs.get("desc"), "before": before, "after": _snapshot(model), "masks": masks})
        return result

    monkeypatch.setattr(pruning, "train_steps", recording)
    return runs


def _kept_equal(a, b, masks):
    """Parameters of a and b agree on every kept entry of the masked matrices (and everywhere else)."""
    for name in a:
        layer = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and layer in masks:
            m = masks[layer]
            if not torch.equal(a[name][m], b[name][m]):
                return False
        elif not torch.equal(a[name], b[name]):
            return False
    return True


def test_ft_prune_imp_does_not_rewind(tmp_path, recorded_training):
    """(a): round r trains from the weights round r-1 trained, pruned; never from the fine-tuned ones."""
    argv = ["--out", str(tmp_path), "--losses", "ce", "--pipelines", "ft_prune", "--methods", "imp",
            "--sparsities", "0.3", "--imp-per-round", "0.15", *TINY]
    assert srnet_command.main(argv) == 0
    descs = [r["desc"] for r in recorded_training]
    # round 0 prunes the fine-tuned model without training it again
    assert descs == ["fine-tune ce", "IMP ft_prune ce round 1", "IMP ft_prune ce round 2"]
    finetune, round1, round2 = recorded_training
    assert _kept_equal(round1["before"], finetune["after"], round1["masks"])
    assert _kept_equal(round2["before"], round1["after"], round2["masks"])
    assert not _kept_equal(round2["before"], finetune["after"], round2["masks"])  # it did move on
    config = json.load(open(os.path.join(tmp_path, "config.json")))
    assert config["protocols"]["ft_prune/imp"]["rewind"] == "none"


def test_prune_ft_imp_prunes_the_pretrained_weights_first_and_rewinds_to_them(tmp_path, recorded_training):
    # --prune-ft-ticket round: the level's number is its IMP round (rewound to the pre-trained weights)
    argv = ["--out", str(tmp_path), "--losses", "ce", "--pipelines", "prune_ft", "--methods", "imp",
            "--sparsities", "0.3", "--imp-per-round", "0.15", "--prune-ft-ticket", "round", *TINY]
    cfg = srnet.parse_args(argv)
    runner = srnet.SRNetRunner(cfg, log=lambda *_: None)
    pretrained = _snapshot(runner.pristine)
    runner.run()
    imp = [r for r in recorded_training if r["desc"].startswith("IMP")]
    assert [r["desc"] for r in imp] == ["IMP prune_ft ce round 1", "IMP prune_ft ce round 2"]
    # round 1 trains the pre-trained weights under the first magnitude mask of those weights
    first = imp[0]
    assert _kept_equal(first["before"], pretrained, first["masks"])
    body = {n: p for n, p in pretrained.items() if not n.startswith("classifier")}
    assert _kept_equal({n: imp[1]["before"][n] for n in body}, body, imp[1]["masks"])  # rewound (head kept)
    magnitude = pretrained["bert.encoder.layer.0.attention.self.query.weight"].abs()
    mask = first["masks"]["bert.encoder.layer.0.attention.self.query"]
    assert magnitude[mask].min() >= magnitude[~mask].max()


def test_mask_pretrained_changes_no_parameter_and_masks_the_head(tmp_path, recorded_training):
    """(c): subnetworks without weight training, the random head included."""
    argv = ["--out", str(tmp_path), "--losses", "poe", "--pipelines", "mask_pretrained", "--sparsities", "0.5", *TINY]
    assert srnet_command.main(argv) == 0
    (run,) = [r for r in recorded_training if r["desc"].startswith("mask_pretrained")]
    assert run["before"].keys() == run["after"].keys()
    for name in run["before"]:
        assert torch.equal(run["before"][name], run["after"][name]), name
    assert "classifier" in run["masks"]
    from safetensors import safe_open

    with safe_open(os.path.join(tmp_path, "masks", "mask_pretrained-mask-poe-s0.50.safetensors"), "pt") as f:
        assert any(k.startswith("classifier") for k in f.keys())


def test_classifier_is_pruned_in_every_pipeline(tmp_path, recorded_training):
    argv = ["--out", str(tmp_path), "--losses", "ce", "--sparsities", "0.5", "--imp-per-round", "0.5", *TINY]
    assert srnet_command.main(argv) == 0
    masked = [r for r in recorded_training if r["masks"]]
    assert {r["desc"].split()[0].split("-")[0] for r in masked} >= {"ft_prune", "prune_ft", "mask_pretrained", "IMP"}
    for r in masked:
        assert "classifier" in r["masks"], r["desc"]
    cfg = srnet.parse_args(["--mask-classifier", "no"])  # and --mask-classifier no turns it off
    assert cfg.protocol("ft_prune", "mask")["mask_classifier"] is False


def test_fixed_sparsity_by_default_and_gsi_when_asked():
    cfg = SRNetConfig()
    assert cfg.start_sparsity(0.9) == 0.9 and cfg.start_sparsity(0.5) == 0.5
    gsi = SRNetConfig(initial_sparsity=0.7)
    assert gsi.start_sparsity(0.9) == 0.7 and gsi.start_sparsity(0.5) == 0.5


def test_best_mask_selection_records_its_step(tmp_path):
    argv = ["--out", str(tmp_path), "--losses", "ce", "--pipelines", "ft_prune", "--methods", "mask",
            "--sparsities", "0.5", "--eval-every", "1", *TINY]
    assert srnet_command.main(argv) == 0
    cell = json.load(open(os.path.join(tmp_path, "cells", "ft_prune-mask-ce-s0.50.json")))
    assert cell["selected_step"] in (3, 4)  # after 70% of 4 steps: steps 3 and 4 are candidates
    assert 0.0 <= cell["selected_metric"] <= 1.0


def test_selector_keeps_the_best_state_with_ties_to_the_later_step():
    from maskedbert import MaskConfig, apply_masks_

    model = torch.nn.Sequential(torch.nn.Linear(6, 5))
    apply_masks_(model, MaskConfig(mode="scores", sparsity=0.5, target_modules="all-linear"))
    layer = pruning.masked_modules(model)["0"]
    metrics = iter([0.2, 0.5, 0.5, 0.1])
    seen = {}

    def evaluate(m):
        seen[len(seen) + 1] = layer.scores.detach().clone()
        return next(metrics)

    selector = pruning.BestMaskSelector(model, evaluate, total_steps=10, every=2, after=0.3)
    for step in range(1, 11):
        with torch.no_grad():
            layer.scores.add_(0.01 * step)
        selector(step)
    assert [s for s, _ in selector.history] == [4, 6, 8, 10]
    record = selector.restore()
    assert record == {"select": "best", "selected_step": 8, "selected_metric": 0.5}
    assert torch.equal(layer.scores, seen[3])  # the state seen at step 8


def test_magnitude_soft_init_is_exact_at_the_initial_sparsity(tmp_path, monkeypatch):
    argv = ["--out", str(tmp_path), "--losses", "ce", "--pipelines", "mask_pretrained", "--sparsities", "0.6",
            "--score-init", "magnitude_soft", "--select", "last", *TINY]
    cfg = srnet.parse_args(argv)
    runner = srnet.SRNetRunner(cfg, log=lambda *_: None)
    seen = {}
    real = pruning.train_steps

    def at_start(model, *args, **kwargs):  # the mask as training begins
        seen["sparsity"] = pruning.score_mask_sparsity(model)
        layer = pruning.masked_modules(model)["bert.encoder.layer.0.output.dense"]
        seen["scores"], seen["abs_w"] = layer.scores.detach().clone(), layer.weight.detach().abs().float()
        seen["threshold"] = layer.threshold
        return real(model, *args, **kwargs)

    monkeypatch.setattr(pruning, "train_steps", at_start)
    runner.mask_train_(runner.fresh_model(), "ce", 0.6, protocol=cfg.protocol("mask_pretrained", "mask"),
                       train_classifier=False)
    assert seen["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert torch.allclose(seen["scores"], seen["abs_w"], atol=1e-6)  # scores are |W| (ties nudged by one ulp)
    k = round(0.6 * seen["abs_w"].numel())
    assert seen["threshold"] == pytest.approx(float(seen["abs_w"].flatten().sort().values[k - 1]))


def test_dry_run_writes_the_resolved_config_and_trains_nothing(tmp_path, recorded_training):
    argv = ["--out", str(tmp_path), "--losses", "ce", "--ft-epochs", "2", "--dry-run", *TINY]
    assert srnet_command.main(argv) == 0
    assert recorded_training == []
    config = json.load(open(os.path.join(tmp_path, "config.json")))
    assert config["resolved"]["ft_steps"] == {"ce": 10}  # ceil(2 epochs * 60 examples / batch 12)
    assert config["protocols"]["prune_ft/imp"]["rewind"] == "start"
    assert config["protocols"]["mask_pretrained/mask"]["train_classifier_mask_training"] is False
    assert config["protocols"]["prune_ft/mask"]["train_classifier_finetuning"] is True
    assert not os.path.exists(os.path.join(tmp_path, "cells"))


def test_report_to_tensorboard_writes_event_files_per_run(tmp_path):
    pytest.importorskip("tensorboard")
    argv = ["--out", str(tmp_path), "--losses", "ce", "--pipelines", "ft_prune", "--methods", "mask",
            "--sparsities", "0.5", "--report-to", "tensorboard", *TINY]
    assert srnet_command.main(argv) == 0
    runs = sorted(os.listdir(tmp_path / "logs"))
    assert runs == ["fine-tune-ce", "ft_prune-mask-ce-s0.50"]
    for run in runs:
        events = os.listdir(tmp_path / "logs" / run / "tensorboard")
        assert any(name.startswith("events.out.tfevents") for name in events), run
