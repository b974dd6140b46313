"""srnet follows the reference experiment: IMP's LR horizon, dense best-dev checkpoints, ticket fine-tuning.

Reference: llyx97/sparse-and-robust-PLM @773dab1 (file:line cited per test).
"""
from __future__ import annotations

import pytest
import torch

from maskedbert.data import PadCollator, encode_examples, synthetic_pair_examples, synthetic_pair_vocabulary
from maskedbert.losses import make_loss_fn
from maskedbert.models import load_model_and_tokenizer
from maskedbert.pruning import train_steps
from maskedbert.train import TrainConfig


def test_imp_round_lr_decays_over_the_whole_budget(tmp_path):
    # hg_transformers/trainer_imp.py:433 rebuilds AdamW and a linear schedule over t_total (the whole
    # budget) at each prune; a round is int(t_total / 10) steps (:560), so a round ends at 0.9 x lr
    from maskedbert.train.runlog import read_jsonl

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary())
    data = encode_examples(synthetic_pair_examples("train", size=16), tok, max_length=16)
    config = TrainConfig(output_dir=str(tmp_path), max_steps=2, batch_size=8, lr=1.0, warmup_steps=0,
                         schedule_steps=20, seed=0, progress=False)
    train_steps(model, data, PadCollator(tok.pad_token_id), make_loss_fn("ce"), config, lr_scores=1.0)
    lrs = [r["lr"] for r in read_jsonl(str(tmp_path / "log.jsonl")) if r.get("type") == "train"]
    assert lrs == pytest.approx([1.0, 0.95])  # the rate each update used: steps 0 and 1 of a 20-step decay
    with pytest.raises(ValueError, match="schedule_steps"):
        TrainConfig(output_dir=str(tmp_path), max_steps=2, schedule_steps=0)


def test_best_checkpoint_keeps_the_earlier_of_tied_steps_and_all_trained_weights():
    # hg_transformers/trainer.py:601: `best_score < value` (a tie keeps the earlier step); evaluations
    # only at multiples of --logging_steps (:566), none at the last step otherwise
    from maskedbert.pruning import BestMaskSelector

    model = torch.nn.Linear(2, 2)
    metrics = iter([0.5, 0.7, 0.7, 0.6])
    selector = BestMaskSelector(model, lambda m: next(metrics), total_steps=9, every=2, after=0.0,
                                ties="earlier", evaluate_last=False)
    for step in range(1, 10):
        with torch.no_grad():
            model.weight.fill_(step)
        selector(step)
    assert [s for s, _ in selector.history] == [2, 4, 6, 8]
    record = selector.restore()
    assert record["selected_step"] == 4 and record["selected_metric"] == 0.7
    assert torch.all(model.weight == 4)  # a dense model's weights are the state kept
    later = BestMaskSelector(model, lambda m: 0.5, total_steps=3, every=1, after=0.0)
    for step in (1, 2, 3):
        later(step)
    assert later.restore()["selected_step"] == 3
    with pytest.raises(ValueError, match="ties"):
        BestMaskSelector(model, lambda m: 0.0, total_steps=3, every=1, ties="first")


# ---- bias and teacher files: column order ------------------------------------------------------------
OFFLINE = ["--task", "synthetic-nli", "--ood-task", "hans", "--model", "tiny-bert", "--train-size", "64",
           "--dev-size", "16", "--challenge-per-cell", "3"]
# the reference's MNLI column order: hg_transformers/data/processors/glue.py:233
REFERENCE_MNLI_ORDER = ("contradiction", "entailment", "neutral")


def _reference_ordered_npy(path, n):
    """One row per training example in the reference's order: (c .05, e .90, n .05) on every row."""
    import numpy as np

    rows = np.tile(np.array([[0.05, 0.90, 0.05]], dtype=np.float32), (n, 1))
    np.save(path, np.log(rows))


def test_preset_mnli_reads_the_reference_npy_with_its_columns_and_records_them(tmp_path):
    import json

    from maskedbert import bias
    from maskedbert.experiments.srnet import options
    from maskedbert.experiments.srnet.pipelines import SRNetRunner

    npy = tmp_path / "log_probs.npy"
    _reference_ordered_npy(npy, 64)
    cfg = options.parse_args(["--preset", "mnli", "--out", str(tmp_path / "run"), "--bias-model", str(npy),
                              "--losses", "poe", *OFFLINE])
    assert cfg.bias_label_order == ",".join(REFERENCE_MNLI_ORDER)  # no extra flag: the preset knows the order
    options.validate(cfg)
    runner = SRNetRunner(cfg, progress=False)
    labels = list(runner.data.label_names)
    assert labels == ["entailment", "neutral", "contradiction"]
    probs = runner.bias_probs()
    first = probs[runner.data.train[0].id]
    assert first[labels.index("entailment")] == pytest.approx(0.90, abs=1e-6)
    written = json.loads((tmp_path / "run" / "bias_probs.json").read_text())
    assert written["labels"] == labels
    assert written["probs"][runner.data.train[0].id] == pytest.approx(first)
    reread = bias.load_probs(tmp_path / "run" / "bias_probs.json", label_names=labels)
    assert reread.keys() == probs.keys() and all(reread[k] == pytest.approx(probs[k]) for k in probs)


def test_undeclared_order_of_a_three_class_npy_is_refused_before_the_run(tmp_path, capsys):
    from maskedbert import cli

    npy = tmp_path / "log_probs.npy"
    _reference_ordered_npy(npy, 64)
    out = tmp_path / "run"
    status = cli.main(["srnet", "--out", str(out), "--bias-model", str(npy), "--losses", "poe", *OFFLINE])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "--bias-label-order" in err and len(err.splitlines()) == 1
    assert not out.exists()
    status = cli.main(["srnet", "--out", str(out), "--bias-model", str(npy), "--losses", "poe",
                       "--bias-label-order", "yes,no,maybe", "--dry-run", *OFFLINE])
    assert status == 2 and "--bias-label-order" in capsys.readouterr().err


# ---- a preset dry run equals the reference's experiment, pipeline by pipeline ---------------------------
# 64 synthetic training examples at batch 32: 2 steps per epoch, so steps = 2 x the reference's epochs.
# Values of llyx97/sparse-and-robust-PLM @773dab1 (scripts/..., one script per task; line cited per value):
#   dense         scripts/full_bert/std_train/<t>.sh:3 epochs, :4 lr, :5 warmup, :28/:29 logging (eval) steps;
#                 robust_train/poe/mnli.sh:3 (5 epochs); hg_transformers/trainer.py:601 best dev, strict >
#   (a) mask      scripts/mask_train/mask_on_plm_ft/plm_std_ft/std/<t>/0.7.sh:3 epochs, :5 logging, :6 warmup,
#                 :37-38 classifier frozen and masked; mask_run_glue.py:207 start_step_ratio 0.7
#   (a) IMP       scripts/imp/prune_after_ft/std/<t>.sh:3 budget epochs, :4 lr; trainer_imp.py:560 round =
#                 budget / 10, :433 schedule over the budget, :485-496 classifier never pruned, :681 global clip
#   (b) IMP       scripts/imp/lt/pruning/<t>.sh:3 budget, :4 robust_type=poe (FEVER :5); ticket:
#                 scripts/imp/lt/retrain/std/<t>/0.7.sh:3 epochs, :6 warmup, :7 best_metric, :36 head unmasked
#   (b) mask      README.md:154, .../plm_std_ft/poe/<t>/retrain/std/0.7.sh:3 (CE), retrain/poe/0.7.sh:3 (PoE),
#                 :6 warmup, :37 head unmasked
#   (c)           scripts/mask_train/mask_on_plm_pt/std/<t>/0.7.sh:3 epochs, :5 start_step_ratio 0
#   oracle        scripts/mask_train/mask_on_plm_ft/plm_std_ft/ood/<t>/0.7.sh:3 epochs, :5 ratio, :7 warmup,
#                 :9 dataset_names (+ fever :10-11 sym2 dev x10), lr 2e-5 (mnli/qqp :29, fever :33)
#   QQP           std_train/qqp.sh:27 --global_grad_clip false, :31 --best_metric eval_f1
REFERENCE = {
    "mnli": dict(lr=5e-5, warmup=3600, every=1000, metric="accuracy", clip="global",
                 dense={"ce": 3, "poe": 5}, mask_a=5, imp_budget=5, ticket_imp={"ce": 5, "poe": 5},
                 ticket_mask={"ce": 3, "poe": 5}, mask_c=5,
                 oracle=dict(epochs=3, warmup=3600, task="hans", split="train", repeat=1, clip="global", extra=[])),
    "qqp": dict(lr=2e-5, warmup=3400, every=1000, metric="f1", clip="per_parameter",
                dense={"ce": 3, "poe": 3}, mask_a=7, imp_budget=7, ticket_imp={"ce": 3, "poe": 3},
                ticket_mask={"ce": 3, "poe": 3}, mask_c=7,
                oracle=dict(epochs=5, warmup=0, task="paws-qqp", split="train", repeat=1, clip="per_parameter",
                            extra=["paws-wiki:train"])),
    "fever": dict(lr=2e-5, warmup=0, every=500, metric="accuracy", clip="global",
                  dense={"ce": 3, "poe": 3}, mask_a=7, imp_budget=7, ticket_imp={"ce": 3, "poe": 3},
                  ticket_mask={"ce": 3, "poe": 3}, mask_c=7,
                  oracle=dict(epochs=3, warmup=0, task="fever-symmetric-v2", split="validation", repeat=10,
                              clip="global", extra=[])),
}


@pytest.mark.parametrize("task", sorted(REFERENCE))
def test_preset_dry_run_equals_the_reference_experiment(tmp_path, task, capsys):
    import json

    from maskedbert.experiments.srnet import command

    ref = REFERENCE[task]
    steps = lambda epochs: int(2 * epochs)  # noqa: E731
    assert command.main(["--preset", task, "--out", str(tmp_path), "--dry-run", "--losses", "ce,poe", "--oracle",
                         *OFFLINE]) == 0
    printed = capsys.readouterr().out
    config = json.load(open(tmp_path / "config.json"))
    p = config["protocols"]
    assert config["resolved"]["select_metric"] == ref["metric"]
    dense = config["resolved"]["dense"]
    assert dense == dict(steps={k: steps(v) for k, v in ref["dense"].items()}, lr=ref["lr"],
                         warmup_steps=ref["warmup"], clip=ref["clip"], select="best", eval_every=ref["every"],
                         ties="earlier step", metric=ref["metric"])
    a = p["ft_prune/mask"]["phases"]
    assert (a["search"]["steps"], a["search"]["lr_scores"], a["search"]["warmup_steps"], a["search"]["reset_every"],
            a["search"]["classifier_masked"]) == (steps(ref["mask_a"]), ref["lr"], ref["warmup"], ref["every"], True)
    # mask_trainer.py:696: `best_score < value`, a tie keeps the earlier mask
    assert a["selection"] == dict(mask="best", after=0.7, eval_every=ref["every"], ties="earlier", metric=ref["metric"])
    for cell, loss in (("ft_prune/imp", "same"), ("prune_ft/imp", "poe")):
        imp = p[cell]["phases"]["search"]
        assert (imp["round_steps"], imp["lr_horizon"], imp["lr"], imp["warmup_steps"], imp["clip"],
                imp["classifier_masked"], imp["rewind"], imp["loss"], imp["first_step"]) == (
            int(steps(ref["imp_budget"]) / 10), int(steps(ref["imp_budget"]) / 10) * 10, ref["lr"], 0, "global",
            False, "none", loss, "prune")
    for cell, epochs in (("prune_ft/imp", ref["ticket_imp"]), ("prune_ft/mask", ref["ticket_mask"])):
        ticket = p[cell]["phases"]["ticket"]
        assert ticket["steps"] == {k: steps(v) for k, v in epochs.items()}
        assert (ticket["lr"], ticket["warmup_steps"], ticket["select"], ticket["eval_every"],
                ticket["classifier_masked"], ticket["clip"]) == (ref["lr"], ref["warmup"], "best", ref["every"], False,
                                                                 ref["clip"])
    assert "ft_prune/mask with loss poe" in p["prune_ft/mask"]["phases"]["search"]["masks"]
    c = p["mask_pretrained/mask"]["phases"]
    assert (c["search"]["steps"], c["search"]["classifier_masked"], c["selection"]["after"]) == (
        steps(ref["mask_c"]), True, 0.0)
    o, want = p["oracle/mask"]["phases"]["search"], ref["oracle"]
    assert (o["data"], o["oracle_task"], o["oracle_split"], o["oracle_repeat"], o["oracle_extra"], o["warmup_steps"],
            o["lr_scores"], o["clip"]) == ("id+ood", want["task"], want["split"], want["repeat"], want["extra"],
                                           want["warmup"], 2e-5, want["clip"])
    assert config["overrides"]["oracle/mask"]["prune_epochs"] == want["epochs"]
    assert p["oracle/mask"]["phases"]["selection"]["after"] == 0.7
    assert "prune_ft/imp ticket:" in printed and "prune_ft/imp search:" in printed
