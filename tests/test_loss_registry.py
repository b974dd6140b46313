"""A loss is one registry entry: its name reaches --help and validation, and srnet trains with it."""
import csv
import os

import pytest
import torch.nn.functional as F

from maskedbert import loss_registry, losses
from maskedbert.experiments.srnet import command as srnet_command
from maskedbert.experiments.srnet import options as srnet_options
from maskedbert.experiments.srnet.cells import srnet_cells
from maskedbert.loss_registry import LossEntry, register_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CALLS = []


def toy_loss(logits, labels, bias_probs):
    """Cross-entropy plus a pull towards the bias model (any function of the entry's inputs will do)."""
    CALLS.append(tuple(bias_probs.shape))
    return F.cross_entropy(logits, labels.long()) + (logits.softmax(1) - bias_probs).square().mean()


@pytest.fixture
def toy_registered():
    CALLS.clear()
    register_loss(LossEntry("toy", toy_loss, needs_bias=True, aliases=("toy_loss",)))
    yield
    del loss_registry.LOSSES["toy"]
    del loss_registry._ALIASES["toy_loss"]


def test_builtin_entries_resolve_to_the_functions():
    assert losses.get_loss("poe") is losses.product_of_experts
    assert [(e.name, e.needs_bias, e.needs_teacher) for e in loss_registry.LOSSES.values()] == [
        ("ce", False, False), ("poe", True, False), ("reweight", True, False), ("conf_reg", True, True)]


def test_bad_entries_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_loss(LossEntry("poe", toy_loss, needs_bias=True))
    with pytest.raises(ValueError, match="'module:attribute'"):
        register_loss(LossEntry("odd", "no_colon"))
    with pytest.raises(ValueError, match="needs_teacher=True needs needs_bias=True"):
        register_loss(LossEntry("odd", toy_loss, needs_teacher=True))
    assert "odd" not in loss_registry.LOSSES


def test_the_flag_views_read_the_registry(toy_registered):
    assert losses.NEEDS_BIAS["toy"] and not losses.NEEDS_TEACHER["toy"] and losses.NEEDS_TEACHER["conf_reg"]
    assert list(losses.NEEDS_BIAS) == list(loss_registry.LOSSES)


def test_a_registered_loss_reaches_help_validation_and_cells(toy_registered):
    assert "comma list of ce, poe, reweight, conf_reg, toy" in " ".join(srnet_options.build_parser().format_help().split())
    cfg = srnet_options.parse_args(["--out", "unused", "--losses", "TOY_LOSS", "--pipelines", "mask_pretrained",
                                    "--methods", "mask", "--sparsities", "0.5"])
    assert cfg.losses == ["toy"]
    assert [(c.id, c.needs) for c in srnet_cells(cfg)] == [("finetune/toy", ()), ("mask_pretrained/mask/toy/s0.50", ())]


def test_srnet_trains_with_a_registered_loss(toy_registered, tmp_path):
    out = str(tmp_path)
    argv = ["--out", out, "--losses", "toy", "--pipelines", "mask_pretrained", "--methods", "mask",
            "--sparsities", "0.5", "--model", "tiny-bert", "--ft-steps", "1", "--prune-steps", "1",
            "--train-size", "24", "--dev-size", "6", "--challenge-per-cell", "1", "--batch-size", "12",
            "--max-length", "32"]
    assert srnet_command.main(argv) == 0
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = {(r["pipeline"], r["loss"]) for r in csv.DictReader(f)}
    assert rows == {("finetune", "toy"), ("mask_pretrained", "toy")}
    # one training step per phase, each batch carrying the bias probabilities the entry asked for
    assert len(CALLS) >= 2 and all(shape == (12, 3) for shape in CALLS)
