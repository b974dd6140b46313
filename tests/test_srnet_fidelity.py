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
