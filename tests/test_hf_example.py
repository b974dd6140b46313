"""examples/hf_trainer_debiased_masks.py end to end, offline: a tiny random BERT and its tokenizer written to a
local folder stand in for a hub checkpoint, the synthetic NLI task for the training file, and a
cross-fitted bias model for the bias probabilities."""
import glob
import importlib.util
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("datasets")

import maskedbert as mb  # noqa: E402
from maskedbert.bias import cross_fit_probs, save_probs  # noqa: E402
from maskedbert.data.synthetic_nli import generate_nli  # noqa: E402
from maskedbert.models import build_word_tokenizer  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "hf_trainer_debiased_masks.py")


def _example():
    spec = importlib.util.spec_from_file_location("hf_trainer_debiased_masks", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inputs(tokenizer, rows):
    return tokenizer([r["premise"] for r in rows], [r["hypothesis"] for r in rows], padding=True,
                     return_tensors="pt")


def test_example_mask_trains_with_poe_saves_reloads_and_merges(tmp_path, one_torch_thread):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    rows = generate_nli(96, seed=0)
    with open(tmp_path / "train.jsonl", "w") as f:
        f.writelines(json.dumps({k: r[k] for k in ("id", "premise", "hypothesis", "label")}) + "\n" for r in rows)
    save_probs(tmp_path / "bias.jsonl", cross_fit_probs("hans_features", rows, 3, folds=3))
    tokenizer = build_word_tokenizer(sorted({w for r in rows for w in f"{r['premise']} {r['hypothesis']}".split()}))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=48)
    base = str(tmp_path / "tiny-bert")  # the "hub checkpoint": a body without a task head, and its tokenizer
    transformers.BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)

    out = tmp_path / "run"
    result = _example().main(["--model", base, "--train-file", str(tmp_path / "train.jsonl"),
                              "--bias-probs", str(tmp_path / "bias.jsonl"), "--out", str(out), "--max-steps", "12",
                              "--batch-size", "16", "--initial-sparsity", "0.3", "--final-sparsity", "0.5",
                              "--report-to", "tensorboard"])
    trainer, model = result["trainer"], result["model"].eval()
    assert trainer.debias_loss.name == "poe"

    # trainer.save_model() wrote the adapter, its model card and the tokenizer; no dense weights
    files = set(os.listdir(out))
    assert {"mask_config.json", "masks.safetensors", "changed_parameters.safetensors", "README.md",
            "tokenizer.json"} <= files and "model.safetensors" not in files
    assert f"`{base}`" in (out / "README.md").read_text()  # names the base checkpoint

    # the masks moved: not the magnitude mask of the same sparsity that the scores started from
    magnitude = mb.apply_masks_(transformers.AutoModelForSequenceClassification.from_pretrained(base, num_labels=3),
                                mb.MaskConfig(sparsity=0.5))
    trained = mb.masked_modules(model)
    assert mb.sparsity_report(model).matrices_sparsity == pytest.approx(0.5, abs=1e-3)
    moved = sum(int((m.mask() != trained[n].mask()).sum()) for n, m in mb.masked_modules(magnitude).items())
    assert moved > 0

    # reloading gives identical logits; the merged plain model loads with transformers alone
    check = _inputs(tokenizer, rows[:6])
    with torch.no_grad():
        expected = model(**check).logits
        reloaded = mb.from_pretrained(out).eval()
        torch.testing.assert_close(reloaded(**check).logits, expected, rtol=0, atol=0)
        merged = transformers.AutoModelForSequenceClassification.from_pretrained(result["merged_dir"]).eval()
        assert not mb.masked_modules(merged)
        torch.testing.assert_close(merged(**check).logits, expected)

    # mask_sparsity reached the TensorBoard event file
    (events_path,) = glob.glob(str(out / "**" / "events.out.tfevents.*"), recursive=True)
    events = event_accumulator.EventAccumulator(events_path)
    events.Reload()
    sparsity = [e.value for e in events.Scalars("train/mask_sparsity")]
    assert sparsity and sparsity[-1] == pytest.approx(0.5, abs=1e-3)
