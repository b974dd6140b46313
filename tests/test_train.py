"""Trainer: schedules, exact resume, NaN stop, logging, best-checkpoint rules, gradient accumulation."""
from __future__ import annotations

import os

import pytest
import torch

from maskedbert.data import PadCollator, encode_examples, synthetic_pair_examples, synthetic_pair_vocabulary
from maskedbert.models import load_model_and_tokenizer
from maskedbert.train import NonFiniteLossError, TrainConfig, Trainer, build_schedule, make_evaluator
from maskedbert.train.runlog import read_jsonl


def test_linear_warmup_decay_and_constant_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, "linear", 10, warmup_ratio=0.2)  # 2 warmup steps
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched2 = build_schedule(opt2, "constant", 10, warmup_steps=4)
    got = []
    for _ in range(6):
        got.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert got == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    with pytest.raises(ValueError, match="schedule"):
        build_schedule(opt, "cosine", 10)
    with pytest.raises(ValueError, match="not both"):
        build_schedule(opt, "linear", 10, warmup_steps=2, warmup_ratio=0.1)


def _setup(n=48, seed=0, dropout=0.1):
    torch.manual_seed(seed)
    model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary(),
                                          config_overrides={"hidden_dropout_prob": dropout,
                                                            "attention_probs_dropout_prob": dropout})
    data = encode_examples(synthetic_pair_examples("train", size=n), tok, max_length=32)
    return model, data, PadCollator(tok.pad_token_id)


def _config(out, **kw):
    base = dict(output_dir=str(out), num_epochs=3, batch_size=8, lr=1e-3, warmup_ratio=0.1, log_every=2,
                checkpoint_every=4, progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_is_bit_for_bit(tmp_path):
    model, data, collate = _setup()
    reference = Trainer(model, _config(tmp_path / "a"), data, collate).train(resume=False)
    assert reference["global_step"] == 18  # 48 / 8 = 6 steps per epoch, 3 epochs
    final_a = {k: v.clone() for k, v in model.state_dict().items()}

    def crash(trainer, step):
        if step == 11:  # after the step-8 checkpoint, mid-epoch (epoch 1 ends at step 12)
            raise _Crash()

    model_b, _, _ = _setup()
    with pytest.raises(_Crash):
        Trainer(model_b, _config(tmp_path / "b"), data, collate, step_callback=crash).train()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["global_step"] == 8
    model_c, _, _ = _setup(seed=123)  # a fresh model with other weights: everything comes from the checkpoint
    resumed = Trainer(model_c, _config(tmp_path / "b"), data, collate)
    resumed.train(resume=True)
    for key, value in model_c.state_dict().items():
        assert torch.equal(value, final_a[key]), key
    losses_a = [r["loss"] for r in read_jsonl(tmp_path / "a" / "log.jsonl") if r["type"] == "train"]
    losses_b = [r["loss"] for r in read_jsonl(tmp_path / "b" / "log.jsonl") if r["type"] == "train"]
    assert losses_a == losses_b


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, data, collate = _setup()

    calls = [0]

    def loss_fn(logits, batch):
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        return loss * float("nan") if calls[0] == 7 else loss

    trainer = Trainer(model, _config(tmp_path, checkpoint_every=2), data, collate, loss_fn=loss_fn)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* step 7.*checkpoint.pt"):
        trainer.train()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad update was not applied
    events = [r for r in read_jsonl(tmp_path / "log.jsonl") if r.get("event") == "non_finite"]
    assert len(events) == 1


def test_logging_eval_best_and_callbacks(tmp_path):
    model, data, collate = _setup(n=32)
    dev = data.subset(range(16))
    seen = []
    scores = iter([0.9, 0.3, 0.5, 0.7])

    def evaluate(m):
        assert not m.training
        return {"accuracy": next(scores), "ood/hans": 1.0}

    cfg = _config(tmp_path, num_epochs=2, eval_every=2, best_metric="accuracy", select_best_after=0.5,
                  save_best_model=True, max_grad_norm=0.5, clip_mode="per_parameter")
    result = Trainer(model, cfg, data, collate, evaluate_fn=evaluate,
                     step_callback=lambda t, s: seen.append(s)).train()
    assert seen == list(range(1, 9))
    # evals at steps 2, 4, 6, 8; only steps >= 4 of 8 count: 0.9 at step 2 came too early
    assert (result["best_value"], result["best_step"]) == (0.7, 8)
    assert result["final_metrics"]["accuracy"] == 0.7 and os.path.exists(tmp_path / "best_model.pt")
    records = read_jsonl(tmp_path / "log.jsonl")
    train = [r for r in records if r["type"] == "train"]
    names = [n for n, p in model.named_parameters()]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    assert set(train[0]["grad_norms"]) == set(names) and train[0]["grad_norm_total"] > 0
    assert all(r["lr"] > 0 for r in train) and all(r["loss"] > 0 for r in train)
    evaluator = make_evaluator(dev, collate, ["accuracy", "mcc"], prefix="dev/")
    assert set(evaluator(model)) == {"dev/accuracy", "dev/mcc"}
    with pytest.raises(ValueError, match="out-of-distribution"):
        _config(tmp_path, best_metric="ood/hans")


def test_gradient_accumulation_matches_a_big_batch(tmp_path):
    results = []
    for accum, bs in ((1, 16), (4, 4)):
        model, data, collate = _setup(n=32, dropout=0.0)
        model = model.double()
        Trainer(model, _config(tmp_path / f"acc{accum}", num_epochs=1, batch_size=bs, grad_accum_steps=accum,
                               checkpoint_every=None), data, collate).train()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    model, data, collate = _setup(n=16)
    result = Trainer(model, _config(tmp_path, num_epochs=1, precision="bf16"), data, collate).train()
    assert result["global_step"] == 2
    with pytest.raises(ValueError, match="fp16"):
        Trainer(model, _config(tmp_path / "x", precision="fp16", device="cpu"), data, collate)


def test_eval_at_start_and_at_epoch_ends(tmp_path):
    # uds-lsv/bert-stable-fine-tuning run_finetuning.py:250-260 evaluates before training (step 0 is a
    # best-step candidate) and :601-608 after every epoch, beside every eval_logging_steps (:514)
    model, data, collate = _setup(n=40)  # batch 8: 5 updates per epoch
    scores = iter([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    steps = []

    def evaluate(m):
        return {"accuracy": next(scores)}

    cfg = _config(tmp_path, num_epochs=2, eval_every=3, best_metric="accuracy", eval_at_start=True,
                  eval_at_epoch_end=True, checkpoint_every=None)
    result = Trainer(model, cfg, data, collate, evaluate_fn=evaluate).train()
    steps = [r["step"] for r in read_jsonl(tmp_path / "log.jsonl") if r["type"] == "eval"]
    assert steps == [0, 3, 5, 6, 9, 10]
    assert (result["best_value"], result["best_step"]) == (0.9, 0)  # the untrained model stays best


@pytest.mark.parametrize("field, value", [
    ("lr", -1e-5), ("lr", float("nan")), ("weight_decay", -0.1), ("adam_eps", -1e-8), ("adam_eps", True),
    ("max_grad_norm", 0.0), ("max_grad_norm", -1.0), ("warmup_ratio", 1.5), ("warmup_steps", -1),
    ("warmup_steps", 2.5),
])
def test_train_config_refuses_bad_optimizer_settings_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(output_dir="unused", **{field: value})


def test_train_config_takes_the_edges_of_its_ranges():
    config = TrainConfig(output_dir="unused", lr=0.0, weight_decay=0.0, adam_eps=0.0, max_grad_norm=None,
                         warmup_ratio=1.0, warmup_steps=0)
    assert (config.lr, config.max_grad_norm, config.warmup_ratio, config.warmup_steps) == (0.0, None, 1.0, 0)
