"""srnet follows the reference experiment: IMP's LR horizon, dense best-dev checkpoints, ticket fine-tuning.

Reference: llyx97/sparse-and-robust-PLM @773dab1 (file:line cited per test).
"""
from __future__ import annotations

import pytest
import torch

from maskedbert.data import PadCollator, encode_examples, synthetic_pair_examples, synthetic_pair_vocabulary
from maskedbert.losses import make_loss_fn
from maskedbert.models import load_model_and_tokenizer
from maskedbert.pruning import TrainSettings, train_steps


def test_imp_round_lr_decays_over_the_whole_budget(tmp_path):
    # hg_transformers/trainer_imp.py:433 rebuilds AdamW and a linear schedule over t_total (the whole
    # budget) at each prune; a round is int(t_total / 10) steps (:560), so a round ends at 0.9 x lr
    from maskedbert.train.runlog import read_jsonl

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary())
    data = encode_examples(synthetic_pair_examples("train", size=16), tok, max_length=16)
    settings = TrainSettings(steps=2, batch_size=8, lr=1.0, warmup_steps=0, schedule_steps=20, seed=0)
    train_steps(model, data, PadCollator(tok.pad_token_id), make_loss_fn("ce"), settings,
                output_dir=str(tmp_path), progress=False)
    lrs = [r["lr"] for r in read_jsonl(str(tmp_path / "log.jsonl")) if r.get("type") == "train"]
    assert lrs == pytest.approx([1.0, 0.95])  # the rate each update used: steps 0 and 1 of a 20-step decay
    with pytest.raises(ValueError, match="schedule_steps"):
        TrainSettings(steps=2, schedule_steps=0)


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
