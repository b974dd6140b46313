"""maskedbert.integrations with the real transformers.Trainer on a tiny BERT: the example script's
schedule, checkpoint masks, resume, DDP (torchrun, gloo, 2 CPU processes), IMPRounds, errors."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers.Trainer needs it

import maskedbert as mb  # noqa: E402
from maskedbert.errors import UsageError  # noqa: E402
from maskedbert.integrations import (IMPRounds, MaskCheckpointCallback, MaskTrainingCallback,  # noqa: E402
                                     mask_training_param_groups)
from maskedbert.patching import masked_modules  # noqa: E402
from maskedbert.pruning import CubicSparsitySchedule  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "hf_trainer_mask_training.py")
COMMON = ["--max-steps", "12", "--save-steps", "4", "--train-size", "64", "--initial-sparsity", "0.5",
          "--final-sparsity", "0.8", "--cpu"]


def _example():
    spec = importlib.util.spec_from_file_location("hf_trainer_mask_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _masks_sparsity(path):
    return mb.masks.read_metadata(path)["sparsity"]


def _scores(model):
    return {name: layer.scores.detach().clone() for name, layer in masked_modules(model).items()}


def test_exact_topk_follows_the_cubic_schedule_every_step(tmp_path, one_torch_thread):
    result = _example().main(["--out", str(tmp_path / "run"), "--method", "exact_topk", *COMMON])
    schedule = CubicSparsitySchedule.for_training(12, 0.5, 0.8)
    steps = [step for step, _, _ in result["history"]]
    assert steps == list(range(0, 13))  # step 0 at train begin, then after every optimizer step
    for step, target, measured in result["history"]:
        assert target == pytest.approx(schedule(step))
        assert measured == pytest.approx(target, abs=1e-3)  # exact per matrix up to rounding
    assert result["history"][4][1] < result["history"][8][1] < 0.8 + 1e-9  # it ramps
    assert _masks_sparsity(tmp_path / "run" / "checkpoint-4" / "masks.safetensors") == pytest.approx(
        schedule(4), abs=1e-3)
    assert result["final_sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_checkpoints_hold_masks_resume_continues_the_schedule_and_adapter_round_trips(tmp_path, one_torch_thread):
    example = _example()
    args = ["--method", "threshold_reset", "--reset-every", "3", *COMMON]
    full = example.main(["--out", str(tmp_path / "full"), *args])
    for step in (4, 8, 12):
        path = tmp_path / "full" / f"checkpoint-{step}" / "masks.safetensors"
        assert path.is_file(), path
    assert _masks_sparsity(tmp_path / "full" / "masks.safetensors") == pytest.approx(0.8, abs=1e-3)

    stopped = example.main(["--out", str(tmp_path / "split"), "--stop-after", "4", *args])
    assert stopped["global_step"] == 4 and stopped["final_sparsity"] is None  # not finalized mid-run
    assert not (tmp_path / "split" / "mask_adapter").exists()
    resumed = example.main(["--out", str(tmp_path / "split"), "--resume", *args])
    assert resumed["global_step"] == 12
    # the resumed run applies the schedule from step 5 on, exactly where the full run was
    assert [h[:2] for h in resumed["history"]] == [h[:2] for h in full["history"] if h[0] > 4]
    full_scores, resumed_scores = _scores(full["model"]), _scores(resumed["model"])
    for name in full_scores:
        torch.testing.assert_close(resumed_scores[name], full_scores[name], rtol=0, atol=0)
    for name, layer in masked_modules(full["model"]).items():
        assert torch.equal(layer.mask(), masked_modules(resumed["model"])[name].mask()), name

    # the adapter written at the end reloads to the same logits
    model = full["model"].eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    loaded = mb.from_pretrained(tmp_path / "full" / "mask_adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


DDP_WORKER = textwrap.dedent('''
    import importlib.util, os, sys
    import maskedbert as mb
    spec = importlib.util.spec_from_file_location("example", sys.argv[1])
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(sys.argv[3:])
    mb.save_masks(result["model"], os.path.join(sys.argv[2], "rank%s.safetensors" % os.environ["RANK"]))
''')


@pytest.mark.slow
def test_ddp_ranks_keep_identical_masks(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
         EXAMPLE, str(tmp_path), "--out", str(out), "--method", "threshold_reset", "--reset-every", "2", *COMMON],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = mb.load_mask_dict(tmp_path / "rank0.safetensors")
    rank1 = mb.load_mask_dict(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and len(rank0) == 13
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert _masks_sparsity(tmp_path / "rank0.safetensors") == pytest.approx(0.8, abs=1e-3)
    assert (out / "checkpoint-12" / "masks.safetensors").is_file() and (out / "mask_adapter").is_dir()


# ---- IMP between Trainer rounds, param groups, errors -------------------------------------------

def _tiny(seed=0):
    from maskedbert.data import synthetic_pair_vocabulary
    from maskedbert.models import load_model_and_tokenizer

    torch.manual_seed(seed)
    return load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary())


def _trainer(model, tokenizer, out, steps=2, callbacks=(), save_steps=None):
    data = _example().training_data(tokenizer, 16, 0)
    save = dict(save_strategy="steps", save_steps=save_steps) if save_steps else dict(save_strategy="no")
    args = transformers.TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8,
                                          learning_rate=1e-3, report_to="none", use_cpu=True,
                                          disable_tqdm=True, logging_steps=1, **save)
    return transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks),
                                data_collator=transformers.DataCollatorWithPadding(tokenizer))


def test_imp_rounds_with_the_hf_trainer(tmp_path, one_torch_thread):
    model, tokenizer = _tiny()
    mb.apply_masks_(model, mb.MaskConfig(mode="fixed"))
    imp = IMPRounds(model, final_sparsity=0.5, per_round=0.25)
    assert imp.levels == [0.25, 0.5]
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    # without the callback a checkpoint is only the mask adapter, which needs a recorded base (this model
    # is built from a config): refused, pointing at the callback that keeps the full state for resuming
    with pytest.raises(UsageError, match="MaskCheckpointCallback|MaskTrainingCallback"):
        _trainer(model, tokenizer, tmp_path / "no-callback", save_steps=1).train()
    model.load_state_dict({k: v for k, v in start.items()}, strict=False)
    for r, level in enumerate(imp.levels):
        _trainer(model, tokenizer, tmp_path / f"round{r}", save_steps=2, callbacks=[MaskCheckpointCallback()]).train()
        # the masks of the round's (pre-pruning) model sit beside its checkpoint
        checkpoint_masks = mb.load_mask_dict(tmp_path / f"round{r}" / "checkpoint-2" / "masks.safetensors")
        assert {n: m.mask() for n, m in masked_modules(model).items()}.keys() == checkpoint_masks.keys()
        record = imp.prune_and_rewind()
        assert record == {"round": r, "level": level, "sparsity": pytest.approx(level, abs=1e-3)}
        for layer in masked_modules(model).values():  # exact per matrix
            assert layer.weight.numel() - int(layer.mask().sum()) == round(level * layer.weight.numel())
        # the body is rewound, the trained head kept
        assert torch.equal(model.bert.encoder.layer[0].intermediate.dense.weight,
                           start["bert.encoder.layer.0.intermediate.dense.weight"])
        assert not torch.equal(model.classifier.weight, start["classifier.weight"])
    assert imp.done
    with pytest.raises(UsageError, match="rounds are done"):
        imp.prune_and_rewind()
    with pytest.raises(UsageError, match="mode 'fixed'"):
        IMPRounds(mb.apply_masks_(_tiny()[0], mb.MaskConfig()))


def test_param_groups_put_scores_at_their_own_lr_without_decay():
    model, _ = _tiny()
    with pytest.raises(UsageError, match="apply_masks_"):
        mask_training_param_groups(model, lr_scores=0.1, lr=1e-5)
    mb.apply_masks_(model, mb.MaskConfig())
    groups = {g["name"]: g for g in mask_training_param_groups(model, lr_scores=0.1, lr=1e-5, weight_decay=0.01)}
    scores = {id(m.scores) for m in masked_modules(model).values()}
    assert {id(p) for p in groups["mask_scores"]["params"]} == scores
    assert groups["mask_scores"]["lr"] == 0.1 and groups["mask_scores"]["weight_decay"] == 0.0
    assert groups["weights"]["lr"] == 1e-5 and groups["weights"]["weight_decay"] == 0.01  # the head
    assert all(id(p) not in scores for g in ("weights", "no_decay") for p in groups[g]["params"])


def test_callback_errors(tmp_path, one_torch_thread):
    for bad in (dict(method="magic"), dict(scope="row"), dict(reset_every=0), dict(final_sparsity=1.5)):
        with pytest.raises(UsageError, match="MaskTrainingCallback"):
            MaskTrainingCallback(**bad)
    model, tokenizer = _tiny()
    with pytest.raises(UsageError, match="has no masks"):
        _trainer(model, tokenizer, tmp_path, callbacks=[MaskCheckpointCallback()]).train()
    mb.apply_masks_(model, mb.MaskConfig(mode="fixed"))  # no scores to train
    with pytest.raises(UsageError, match="mode 'scores'"):
        _trainer(model, tokenizer, tmp_path, callbacks=[MaskTrainingCallback()]).train()
