"""Mask adapters: mb.save_pretrained / mb.from_pretrained round trips on a tiny BERT saved locally."""
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import maskedbert as mb  # noqa: E402
from maskedbert.adapters import CHANGED_NAME, CONFIG_NAME, MASKS_NAME, README_NAME  # noqa: E402
from maskedbert.errors import UsageError  # noqa: E402
from maskedbert.patching import masked_modules  # noqa: E402

VOCAB = 99
_SIZE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


@pytest.fixture
def base_dir(tmp_path):
    """A 'public checkpoint': a tiny BERT body (no head) saved with save_pretrained."""
    torch.manual_seed(0)
    path = tmp_path / "base"
    transformers.BertModel(transformers.BertConfig(**_SIZE)).save_pretrained(path)
    return str(path)


def _task_model(base_dir, seed=1):
    torch.manual_seed(seed)  # the new head's init
    return transformers.BertForSequenceClassification.from_pretrained(base_dir, num_labels=3).eval()


def _inputs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (3, 11), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model):
    with torch.no_grad():
        return model(**_inputs()).logits


def _trained(base_dir):
    """A mask-trained model: random scores around tau (not the magnitude mask) and a trained head."""
    model = _task_model(base_dir)
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in masked_modules(model).values():
            layer.scores.copy_(torch.rand(layer.scores.shape, generator=g) * 0.02)
        model.classifier.weight.add_(torch.randn(model.classifier.weight.shape, generator=g))
    return model


def test_round_trip_gives_identical_logits_and_only_the_head_as_changed(base_dir, tmp_path):
    model = _trained(base_dir)
    expected = _logits(model)
    out = tmp_path / "adapter"
    payload = mb.save_pretrained(model, out)
    assert sorted(os.listdir(out)) == sorted([CONFIG_NAME, MASKS_NAME, CHANGED_NAME, README_NAME])
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config == payload
    assert config["base_model"] == {"name_or_path": base_dir, "revision": None}
    assert config["mask_format_version"] == 1 and config["adapter_format_version"] == 1
    assert config["maskedbert_version"] == mb.__version__
    assert config["model_class"] == "BertForSequenceClassification"
    assert mb.MaskConfig.from_dict(config["mask_config"]) == mb.MaskConfig(sparsity=0.5)
    # the body's weights are the base's: only the new (trained) head is stored
    assert config["changed_parameters"] == ["classifier.bias", "classifier.weight"]

    for base in (None, base_dir, transformers.BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)):
        loaded = mb.from_pretrained(out, base_model=base)
        assert set(masked_modules(loaded)) == set(masked_modules(model))
        torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=0)
        for name, layer in masked_modules(loaded).items():
            assert torch.equal(layer.mask(), masked_modules(model)[name].mask()), name
    # the loaded adapter saves again to the same masks
    again = mb.save_pretrained(loaded, tmp_path / "again")
    assert again["changed_parameters"] == config["changed_parameters"]
    assert mb.load_mask_dict(tmp_path / "again" / MASKS_NAME).keys() == mb.load_mask_dict(out / MASKS_NAME).keys()


def test_adapter_size_is_the_packed_masks_plus_the_head(base_dir, tmp_path):
    model = _trained(base_dir)
    mb.save_pretrained(model, tmp_path / "adapter")
    masked_numel = sum(m.weight.numel() for m in masked_modules(model).values())
    mask_bytes = os.path.getsize(tmp_path / "adapter" / MASKS_NAME)
    head_bytes = 4 * (model.classifier.weight.numel() + model.classifier.bias.numel())
    assert masked_numel // 8 <= mask_bytes <= masked_numel // 8 + 8192  # bits + names/metadata
    assert os.path.getsize(tmp_path / "adapter" / CHANGED_NAME) <= head_bytes + 1024
    # vs the dense model: for BERT-base the same bound is ~10.7 MB for 85M masked weights
    dense_bytes = 4 * sum(p.numel() for n, p in model.named_parameters() if not n.endswith(".scores"))
    adapter_bytes = sum(os.path.getsize(tmp_path / "adapter" / f) for f in os.listdir(tmp_path / "adapter"))
    assert adapter_bytes < dense_bytes / 3


def test_fixed_mode_with_trained_weights_stores_the_changed_weights(base_dir, tmp_path):
    model = _task_model(base_dir)
    mb.apply_masks_(model, mb.MaskConfig(mode="fixed", sparsity=0.6))
    with torch.no_grad():  # IMP retrained this one matrix
        masked_modules(model)["bert.encoder.layer.1.output.dense"].weight.mul_(1.5)
    expected = _logits(model)
    config = mb.save_pretrained(model, tmp_path / "adapter")
    assert "bert.encoder.layer.1.output.dense.weight" in config["changed_parameters"]
    assert "bert.encoder.layer.0.output.dense.weight" not in config["changed_parameters"]
    torch.testing.assert_close(_logits(mb.from_pretrained(tmp_path / "adapter")), expected, rtol=0, atol=0)


def test_models_own_save_pretrained_writes_the_adapter_until_merged(base_dir, tmp_path):
    model = _trained(base_dir)
    expected = _logits(model)
    model.save_pretrained(tmp_path / "own")  # what Trainer.save_model() calls
    assert sorted(os.listdir(tmp_path / "own")) == sorted([CONFIG_NAME, MASKS_NAME, CHANGED_NAME, README_NAME])
    torch.testing.assert_close(_logits(mb.from_pretrained(tmp_path / "own")), expected, rtol=0, atol=0)
    model.save_pretrained(tmp_path / "other_rank", is_main_process=False)  # only the main process writes
    assert not (tmp_path / "other_rank").exists()
    mb.merge_and_unload(model).save_pretrained(tmp_path / "merged")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(reloaded), expected)


def test_save_errors_write_nothing(base_dir, tmp_path):
    out = tmp_path / "adapter"
    with pytest.raises(UsageError, match="has no masks"):
        mb.save_pretrained(_task_model(base_dir), out)
    from_config = transformers.BertForSequenceClassification(transformers.BertConfig(**_SIZE))
    mb.apply_masks_(from_config, mb.MaskConfig())
    with pytest.raises(UsageError, match="pass base_model="):
        mb.save_pretrained(from_config, out)
    with pytest.raises(UsageError, match="repo_id"):
        mb.save_pretrained(_trained(base_dir), out, push_to_hub=True)
    assert not out.exists()
    # an unmasked module as the base works, and names the checkpoint for loading
    base = transformers.BertForSequenceClassification(transformers.BertConfig(**_SIZE))
    base.load_state_dict(from_config.state_dict(), strict=False)
    config = mb.save_pretrained(from_config, out, base_model=base, base_model_name_or_path="org/tiny")
    assert config["changed_parameters"] == [] and not (out / CHANGED_NAME).exists()
    assert config["base_model"]["name_or_path"] == "org/tiny"


def test_push_to_hub_uploads_the_folder(base_dir, tmp_path, monkeypatch):
    calls = []

    class FakeApi:  # no network here: record what would be sent
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message, allow_patterns):
            calls.append(("upload_folder", sorted(os.listdir(folder_path)), repo_id, sorted(allow_patterns)))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    mb.save_pretrained(_trained(base_dir), tmp_path / "a", push_to_hub=True, repo_id="me/tiny-mask", private=True,
                       token="t")
    files = sorted([CONFIG_NAME, MASKS_NAME, CHANGED_NAME, README_NAME])
    assert calls == [("token", "t"), ("create_repo", "me/tiny-mask", True, True),
                     ("upload_folder", files, "me/tiny-mask", files)]
    # the model's own push_to_hub (transformers' PushToHubMixin) uploads the same adapter
    calls.clear()
    _trained(base_dir).push_to_hub("me/tiny-mask", token="t")
    assert calls == [("token", "t"), ("create_repo", "me/tiny-mask", None, True),
                     ("upload_folder", files, "me/tiny-mask", files)]


def test_model_card_has_base_model_and_sparsity_and_keeps_foreign_text(base_dir, tmp_path):
    from huggingface_hub import ModelCard

    model = _trained(base_dir)
    payload = mb.save_pretrained(model, tmp_path / "a")
    card = ModelCard.load(tmp_path / "a" / README_NAME)
    # a local base folder is named in the text only: the Hub refuses base_model metadata that is no model id
    assert card.data.base_model is None and f"`{base_dir}`" in card.text and card.data.library_name == "maskedbert"
    assert card.data.mask_sparsity == pytest.approx(payload["sparsity"], abs=1e-6)
    assert "maskedbert" in card.data.tags and f"{payload['sparsity']:.2%}" in card.text
    assert "mb.from_pretrained" in card.text and "merge_and_unload" in card.text
    # a card someone else wrote (e.g. the Trainer's training summary) keeps its text; ours is added once
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / README_NAME).write_text("---\nlicense: mit\n---\n\n# My run\n\nTrained on my data.\n")
    for _ in range(2):
        mb.save_pretrained(model, tmp_path / "b")
    card = ModelCard.load(tmp_path / "b" / README_NAME)
    assert card.data.license == "mit" and card.data.base_model is None
    assert card.text.count("# maskedbert mask adapter") == 1 and "Trained on my data." in card.text
    # a hub base goes into the metadata
    mb.save_pretrained(model, tmp_path / "c", base_model=_task_model(base_dir), base_model_name_or_path="org/tiny-bert")
    assert ModelCard.load(tmp_path / "c" / README_NAME).data.base_model == "org/tiny-bert"


def test_from_pretrained_takes_peft_argument_order(base_dir, tmp_path):
    model = _trained(base_dir)
    mb.save_pretrained(model, tmp_path / "adapter")
    base = transformers.BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    loaded = mb.from_pretrained(base, tmp_path / "adapter")  # peft.PeftModel.from_pretrained(model, path)
    assert loaded is base
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    with pytest.raises(UsageError, match="second argument must be the adapter folder"):
        mb.from_pretrained(base, base)


def test_from_pretrained_errors(base_dir, tmp_path):
    with pytest.raises(UsageError, match="plain transformers checkpoint.*AutoModel"):
        mb.from_pretrained(base_dir)  # a model folder, not an adapter
    (tmp_path / "peft").mkdir()
    (tmp_path / "peft" / "adapter_config.json").write_text("{}")
    with pytest.raises(UsageError, match="PEFT adapter.*PeftModel.from_pretrained"):
        mb.from_pretrained(tmp_path / "peft")
    with pytest.raises(UsageError, match="neither an adapter folder nor a hub repo id"):
        mb.from_pretrained(tmp_path / "no" / "such" / "dir")
    model = _trained(base_dir)
    mb.save_pretrained(model, tmp_path / "adapter")
    with pytest.raises(UsageError, match="already has masks"):
        mb.from_pretrained(tmp_path / "adapter", base_model=model)
    config = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    config["adapter_format_version"] = 99
    (tmp_path / "adapter" / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(UsageError, match="format version 99"):
        mb.from_pretrained(tmp_path / "adapter")


def test_base_with_a_head_of_another_size(tmp_path):
    """The base checkpoint is itself a classifier (3 labels); the masked model has a new 2-label head."""
    torch.manual_seed(0)
    base_dir = tmp_path / "base3"
    transformers.BertForSequenceClassification(transformers.BertConfig(**_SIZE, num_labels=3)).save_pretrained(base_dir)
    torch.manual_seed(1)
    model = transformers.BertForSequenceClassification.from_pretrained(base_dir, num_labels=2,
                                                                       ignore_mismatched_sizes=True).eval()
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.3))
    expected = _logits(model)
    config = mb.save_pretrained(model, tmp_path / "adapter")
    assert config["changed_parameters"] == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(_logits(mb.from_pretrained(tmp_path / "adapter")), expected, rtol=0, atol=0)


def test_adapter_from_the_hub_by_repo_id(base_dir, tmp_path, monkeypatch):
    import huggingface_hub

    model = _trained(base_dir)
    mb.save_pretrained(model, tmp_path / "adapter")
    asked = []

    def fake_download(repo_id, revision=None, token=None, allow_patterns=None):  # no network here
        asked.append((repo_id, revision, sorted(allow_patterns)))
        return str(tmp_path / "adapter")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    loaded = mb.from_pretrained("me/tiny-mask", adapter_revision="v1")
    assert asked == [("me/tiny-mask", "v1", sorted([CONFIG_NAME, MASKS_NAME, CHANGED_NAME]))]
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UsageError, match="no adapter folder 'me/other' here.*OSError: offline"):
        mb.from_pretrained("me/other")


def test_a_base_reference_keeps_only_what_can_change_and_is_reused(base_dir, tmp_path):
    from maskedbert.adapters import BaseReference

    model = _task_model(base_dir)
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))  # body frozen, head trains
    reference = BaseReference.resolve(model)
    assert sorted(k for k in reference.watched if not k.endswith("position_ids") and "token_type" not in k) == [
        "classifier.bias", "classifier.weight"]  # trainable parameters (and buffers), not the frozen body
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    first = mb.save_pretrained(model, tmp_path / "a", base_reference=reference)
    assert first["changed_parameters"] == ["classifier.bias", "classifier.weight"]
    assert torch.equal(mb.from_pretrained(tmp_path / "a").classifier.weight, model.classifier.weight)
    assert reference.covers(model)
    model.bert.pooler.dense.weight.requires_grad_(True)  # newly trainable: the reference no longer covers it
    assert not reference.covers(model)
    with pytest.raises(UsageError, match="not both"):
        mb.save_pretrained(model, tmp_path / "b", base_reference=reference, base_model=base_dir)
