"""The real transformers.Trainer on the synthetic NLI task with a tiny BERT: each trap a Hugging Face user
would hit (masks that never move, statistics the report_to backends never see, save_model refusing,
the wrong learning rate logged) and the debiasing losses computed inside the Trainer."""
import glob
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers.Trainer needs it

import maskedbert as mb  # noqa: E402
from maskedbert.data.synthetic_nli import generate_nli  # noqa: E402
from maskedbert.errors import UsageError  # noqa: E402
from maskedbert.integrations import (DebiasLoss, MaskTrainer, MaskTrainingCallback,  # noqa: E402
                                     mask_optimizer_cls_and_kwargs)
from maskedbert.models import build_word_tokenizer  # noqa: E402

N = 24


@pytest.fixture(scope="module")
def nli(tmp_path_factory):
    """(base checkpoint folder, tokenizer, training rows with ids, bias and teacher probabilities by id)."""
    rows = generate_nli(N, seed=0)
    tokenizer = build_word_tokenizer(sorted({w for r in rows for w in f"{r['premise']} {r['hypothesis']}".split()}))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=48, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = str(tmp_path_factory.mktemp("nli") / "base")
    transformers.BertForSequenceClassification(config).save_pretrained(base)
    encoded = tokenizer([r["premise"] for r in rows], [r["hypothesis"] for r in rows])
    data = [{**{k: encoded[k][i] for k in encoded}, "label": r["label"], "id": r["id"]} for i, r in enumerate(rows)]
    g = torch.Generator().manual_seed(5)
    bias = {r["id"]: p.tolist() for r, p in zip(rows, torch.softmax(3 * torch.randn(N, 3, generator=g), 1))}
    teacher = {r["id"]: p.tolist() for r, p in zip(rows, torch.softmax(2 * torch.randn(N, 3, generator=g), 1))}
    return base, tokenizer, data, bias, teacher


def _masked(base, sparsity=0.5):
    model = transformers.BertForSequenceClassification.from_pretrained(base)
    return mb.apply_masks_(model, mb.MaskConfig(sparsity=sparsity))


def _args(out, **overrides):
    settings = dict(output_dir=str(out), max_steps=4, per_device_train_batch_size=8, learning_rate=5e-5,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
    settings.update(overrides)
    return transformers.TrainingArguments(**settings)


def _collator(tokenizer):
    return transformers.DataCollatorWithPadding(tokenizer)


def _batch(tokenizer, data):
    batch = _collator(tokenizer)([{k: v for k, v in row.items() if k != "id"} for row in data])
    return batch.pop("labels"), batch


def test_the_trainers_default_optimizer_is_refused_with_one_clear_message(nli, tmp_path, one_torch_thread):
    base, tokenizer, data, _, _ = nli
    model = _masked(base)
    callback = MaskTrainingCallback(initial_sparsity=0.5, final_sparsity=0.6)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path), train_dataset=data, callbacks=[callback],
                                   data_collator=_collator(tokenizer))
    # its default groups put the scores beside the weights at 5e-5 with decay: the masks would never move
    with pytest.raises(UsageError, match=r"one group with other parameters, at lr=5e-05.*MaskTrainer\(.*lr_scores"
                                         r".*mask_optimizer_cls_and_kwargs"):
        trainer.train()
    head_only = torch.optim.AdamW(model.classifier.parameters(), lr=1e-3)
    trainer = transformers.Trainer(model=_masked(base), args=_args(tmp_path), train_dataset=data,
                                   callbacks=[MaskTrainingCallback()], data_collator=_collator(tokenizer),
                                   optimizers=(head_only, None))
    with pytest.raises(UsageError, match="holds none of the mask scores"):
        trainer.train()


def test_the_optimizer_built_through_the_trainers_own_arguments_trains_the_masks(nli, tmp_path, one_torch_thread):
    base, tokenizer, data, _, _ = nli
    model = _masked(base)
    start = {n: m.mask().clone() for n, m in mb.masked_modules(model).items()}
    args = _args(tmp_path, optim="sgd", learning_rate=1e-3)  # args.optim is honoured, not bypassed
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, data_collator=_collator(tokenizer),
        callbacks=[MaskTrainingCallback(initial_sparsity=0.5, final_sparsity=0.5, method="exact_topk")],
        optimizer_cls_and_kwargs=mask_optimizer_cls_and_kwargs(args, lr_scores=1e3))  # SGD: steps scale with
    # the score gradients, which are small (~1e-4) on this tiny model
    trainer.train()
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(inner) is torch.optim.SGD
    groups = {g["name"]: g for g in inner.param_groups}
    assert list(groups) == ["weights", "no_decay", "mask_scores"]  # the Trainer's learning_rate is the weights'
    assert groups["mask_scores"]["weight_decay"] == 0.0
    changed = sum(int((m.mask() != start[n]).sum()) for n, m in mb.masked_modules(model).items())
    assert changed > 0  # the masks moved (at the same sparsity: exact top-k every step)


def test_mask_statistics_and_both_learning_rates_reach_tensorboard(nli, tmp_path, one_torch_thread, capsys):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    base, tokenizer, data, _, _ = nli
    model = _masked(base)
    callback = MaskTrainingCallback(initial_sparsity=0.5, final_sparsity=0.7, method="exact_topk")
    args = _args(tmp_path / "tb", report_to="tensorboard")
    trainer = MaskTrainer(model=model, args=args, train_dataset=data, data_collator=_collator(tokenizer),
                          callbacks=[callback], lr_scores=1e-2)
    trainer.train()
    (path,) = glob.glob(str(tmp_path / "tb" / "**" / "events.out.tfevents.*"), recursive=True)
    events = event_accumulator.EventAccumulator(path)
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/mask_sparsity", "train/mask_target_sparsity", "train/learning_rate_mask_scores",
            "train/learning_rate_weights"} <= set(tags)
    sparsity = [e.value for e in events.Scalars("train/mask_sparsity")]
    assert len(sparsity) == 4 and sparsity[-1] == pytest.approx(0.7, abs=2e-3)
    weights_lr = [e.value for e in events.Scalars("train/learning_rate")]
    scores_lr = [e.value for e in events.Scalars("train/learning_rate_mask_scores")]
    assert weights_lr[0] == pytest.approx(5e-5) and scores_lr[0] == pytest.approx(1e-2)  # both, by name
    assert [e.value for e in events.Scalars("train/learning_rate_weights")] == pytest.approx(weights_lr)

    # a plain Trainer runs the report_to callbacks before ours: it says so instead of dropping them silently
    args = _args(tmp_path / "plain", report_to="tensorboard", max_steps=1)
    plain = transformers.Trainer(model=_masked(base), args=args, train_dataset=data,
                                 data_collator=_collator(tokenizer), callbacks=[MaskTrainingCallback()],
                                 optimizer_cls_and_kwargs=mask_optimizer_cls_and_kwargs(args, lr_scores=1e-2))
    capsys.readouterr()
    plain.train()
    warned = capsys.readouterr().err  # the "maskedbert" logger's console handler writes warnings to stderr
    assert "never see mask_sparsity" in warned and "MaskTrainer" in warned


def test_save_model_and_checkpoints_write_the_mask_adapter(nli, tmp_path, one_torch_thread, monkeypatch):
    from huggingface_hub import ModelCard

    import maskedbert.adapters

    base_loads = []
    resolve = maskedbert.adapters._resolve_base_for_saving
    monkeypatch.setattr(maskedbert.adapters, "_resolve_base_for_saving",
                        lambda *a: base_loads.append(1) or resolve(*a))
    base, tokenizer, data, _, _ = nli
    model = _masked(base)
    args = _args(tmp_path / "out", save_strategy="steps", save_steps=1)
    trainer = MaskTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                          callbacks=[MaskTrainingCallback(initial_sparsity=0.5, final_sparsity=0.7,
                                                          method="exact_topk")],
                          lr_scores=1e-2)  # exact top-k: the last checkpoint holds the final masks too
    trainer.train()
    assert len(base_loads) == 1  # four checkpoints, one load of the base to tell what changed
    trainer.save_model()  # raised before: the masked model's save_pretrained refused
    out = tmp_path / "out"
    files = set(os.listdir(out))
    assert {"mask_config.json", "masks.safetensors", "changed_parameters.safetensors", "README.md",
            "tokenizer.json"} <= files
    assert "model.safetensors" not in files  # no silently dense weights
    card = ModelCard.load(out / "README.md")
    assert card.data.mask_sparsity == pytest.approx(0.7, abs=2e-3) and f"`{base}`" in card.text
    assert card.data.base_model is None  # a local folder: base_model metadata would make the Hub refuse the card
    # checkpoints: the full state for resuming, and the adapter beside it
    assert {"model.safetensors", "optimizer.pt", "mask_config.json", "masks.safetensors"} <= set(
        os.listdir(out / "checkpoint-2"))
    labels, batch = _batch(tokenizer, data[:5])
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
        for folder in (out, out / "checkpoint-4"):
            torch.testing.assert_close(mb.from_pretrained(folder).eval()(**batch).logits, expected, rtol=0, atol=0)
    # the Trainer's model card (written by push_to_hub) keeps the adapter's metadata and loading section
    trainer.create_model_card(model_name="tiny-mask")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "maskedbert" and card.data.base_model is None
    assert "mb.from_pretrained" in card.text and card.text.count("# maskedbert mask adapter") == 1


@pytest.mark.parametrize("loss_name", ["poe", "reweight", "conf_reg"])
def test_debiasing_losses_in_the_trainer_equal_maskedbert_losses(nli, tmp_path, loss_name, one_torch_thread):
    base, tokenizer, data, bias, teacher = nli
    model = _masked(base)
    labels, batch = _batch(tokenizer, data)  # the whole set is one batch: order does not change a mean
    ids = [row["id"] for row in data]
    bias_rows = torch.tensor([bias[i] for i in ids])
    with torch.no_grad():
        logits = model.eval()(**batch).logits
    if loss_name == "conf_reg":
        teacher_rows = torch.tensor([teacher[i] for i in ids])
        expected = mb.losses.confidence_regularization(logits, labels, bias_rows, teacher_rows)
    else:
        expected = mb.losses.get_loss(loss_name)(logits, labels, bias_rows)
    expected_eval = mb.losses.cross_entropy(logits, labels)

    debias = DebiasLoss(loss_name, bias_probs=bias, teacher_probs=teacher if loss_name == "conf_reg" else None)
    trainer = MaskTrainer(model=model, args=_args(tmp_path, max_steps=1, per_device_train_batch_size=N),
                          train_dataset=data, data_collator=_collator(tokenizer), lr_scores=1e-2, debias_loss=debias)
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) != pytest.approx(float(expected_eval))  # the debiased loss is not plain CE
    # evaluation scores the task's plain cross-entropy on the same rows
    model_after = trainer.model.eval()
    with torch.no_grad():
        after_eval = float(mb.losses.cross_entropy(model_after(**batch).logits, labels))
    metrics = trainer.evaluate(eval_dataset=data)
    assert metrics["eval_loss"] == pytest.approx(after_eval, rel=1e-5)


def test_debias_loss_errors(nli, tmp_path, one_torch_thread):
    base, tokenizer, data, bias, _ = nli
    with pytest.raises(UsageError, match="needs teacher_probs"):
        DebiasLoss("conf_reg", bias_probs=bias)
    with pytest.raises(UsageError, match="unknown loss"):
        DebiasLoss("focal", bias_probs=bias)
    partial = {k: v for k, v in bias.items() if k != data[3]["id"]}
    trainer = MaskTrainer(model=_masked(base), args=_args(tmp_path, max_steps=1, per_device_train_batch_size=N),
                          train_dataset=data, data_collator=_collator(tokenizer), lr_scores=1e-2,
                          debias_loss=DebiasLoss("poe", bias_probs=partial))
    with pytest.raises(UsageError, match=f"no probabilities for id '{data[3]['id']}'"):
        trainer.train()
    with pytest.raises(UsageError, match="lr_scores"):
        MaskTrainer(model=_masked(base), args=_args(tmp_path), train_dataset=data,
                    data_collator=_collator(tokenizer)).train()


def test_debias_loss_anneals_the_bias_probabilities_over_the_run():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 1, 0])
    ids = [f"ex{i}" for i in range(5)]
    bias = torch.softmax(2 * torch.randn(5, 3, generator=g), 1)
    loss = DebiasLoss("poe", bias_probs={i: row.tolist() for i, row in zip(ids, bias)}, anneal_floor=0.8)
    start = loss(logits, labels, ids, step=0, total_steps=10)
    end = loss(logits, labels, ids, step=10, total_steps=10)
    torch.testing.assert_close(start, mb.losses.product_of_experts(logits, labels, bias))
    torch.testing.assert_close(end, mb.losses.product_of_experts(logits, labels, mb.losses.anneal_probs(bias, 0.8)))
    assert not torch.allclose(start, end)
