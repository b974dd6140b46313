"""Loading a local checkpoint: transformers' load report is silenced where the mismatch is intended (a new
head, layers cut off), and anything else is still reported."""
import subprocess
import sys
import warnings

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from maskedbert.models import build_word_tokenizer, load_model_and_tokenizer


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(["the", "cat", "sat"])
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=4,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(tmp_path)  # an encoder without a head, as on the hub
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def _load(path, capfd, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = load_model_and_tokenizer(str(path), 3, **kwargs)
    out, err = capfd.readouterr()
    return model, out + err, [str(w.message) for w in caught if "weights were not loaded" in str(w.message)]


@pytest.mark.slow
def test_new_head_and_cut_layers_load_quietly(checkpoint):
    """In a fresh process, as a command runs (pytest's log capture would hide transformers' report)."""
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from maskedbert.models import load_model_and_tokenizer\n"
            f"model, _ = load_model_and_tokenizer({str(checkpoint)!r}, 3, config_overrides={{'num_hidden_layers': 2}})\n"
            "print(len(model.bert.encoder.layer))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert "LOAD REPORT" not in out.stderr and "UNEXPECTED" not in out.stderr and "MISSING" not in out.stderr
    assert "Loading weights" not in out.stderr


def test_an_unintended_mismatch_is_still_reported(checkpoint, capfd):
    weights = load_file(checkpoint / "model.safetensors")
    dropped = next(k for k in weights if "layer.1.attention.self.query.weight" in k)
    del weights[dropped]
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    _, _, warned = _load(checkpoint, capfd, config_overrides={"num_hidden_layers": 2})
    assert len(warned) == 1 and "layer.1.attention.self.query.weight" in warned[0]


def test_transformers_verbosity_is_restored(checkpoint, capfd):
    level = transformers.utils.logging.get_verbosity()
    _load(checkpoint, capfd)
    assert transformers.utils.logging.get_verbosity() == level


def test_pooler_head_drops_robertas_first_dropout():
    # uds-lsv/bert-stable-fine-tuning pooling_roberta.py:52-57: with pooler_dropout false the [CLS]
    # vector goes straight into the dense layer; Hugging Face's RoBERTa head applies dropout first
    import torch

    from maskedbert.models import load_model_and_tokenizer, use_pooler_head_

    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer("tiny-roberta", 2, config_overrides={"hidden_dropout_prob": 0.5,
                                                                             "classifier_dropout": 0.5})
    head = model.classifier
    features = torch.randn(4, 3, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_pooler_head_(model) and not use_pooler_head_(model)
    assert {k for k in model.state_dict()} == set(state)
    model.classifier.train()
    torch.manual_seed(1)
    got = model.classifier(features)
    torch.manual_seed(1)  # the same dropout draw, applied after tanh only
    expected = head.out_proj(head.dropout(torch.tanh(head.dense(features[:, 0, :]))))
    torch.testing.assert_close(got, expected)
    model.classifier.eval()
    head.eval()
    torch.testing.assert_close(model.classifier(features), head(features))  # no dropout: the same function
    bert, _ = load_model_and_tokenizer("tiny-bert", 2)
    assert not use_pooler_head_(bert)
