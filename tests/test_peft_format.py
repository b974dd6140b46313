"""A mask adapter as a PEFT-style state dict and back: exact round trip, PEFT's key layout, and the size
that bit-packing saves."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import maskedbert as mb  # noqa: E402
from maskedbert.errors import UsageError  # noqa: E402
from maskedbert.peft_format import from_peft_state_dict, to_peft_state_dict  # noqa: E402

_SIZE = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)


@pytest.fixture
def adapter(tmp_path):
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**_SIZE)).save_pretrained(tmp_path / "base")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3).eval()
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.6))
    with torch.no_grad():  # trained scores, not the magnitude mask
        for layer in mb.masked_modules(model).values():
            layer.scores.copy_(torch.rand(layer.scores.shape) * 0.02)
    mb.save_pretrained(model, tmp_path / "adapter")
    return model, tmp_path / "adapter"


def _logits(model):
    ids = torch.randint(1, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_round_trip_is_exact_and_uses_peft_key_layout(adapter, tmp_path):
    model, folder = adapter
    state, config = to_peft_state_dict(folder)
    layers = mb.masked_modules(model)
    assert config["peft_type"] == "MASKEDBERT" and config["target_modules"] == sorted(layers)
    assert config["modules_to_save"] == ["classifier"]
    for name, layer in layers.items():
        scores = state[f"base_model.model.{name}.maskedbert_scores"]
        assert scores.dtype == torch.float32 and torch.equal(scores > config["threshold"], layer.mask())
    assert torch.equal(state["base_model.model.classifier.weight"], model.classifier.weight.detach())

    payload = from_peft_state_dict(state, config, tmp_path / "back")
    original = mb.adapters.read_adapter_config(folder)
    assert payload == original
    for name, mask in mb.load_mask_dict(folder / "masks.safetensors").items():
        assert torch.equal(mb.load_mask_dict(tmp_path / "back" / "masks.safetensors")[name], mask)
    torch.testing.assert_close(_logits(mb.from_pretrained(tmp_path / "back").eval()), _logits(model), rtol=0, atol=0)

    # what bit-packing saves: fp32 scores take 32x the bytes of the packed masks
    from safetensors import safe_open

    with safe_open(str(folder / "masks.safetensors"), framework="pt") as f:
        packed_bytes = sum(f.get_tensor(k).nbytes for k in f.keys())
    scores_bytes = sum(v.nbytes for k, v in state.items() if k.endswith("maskedbert_scores"))
    assert scores_bytes == 32 * packed_bytes


def test_conversion_errors(adapter, tmp_path):
    _, folder = adapter
    state, config = to_peft_state_dict(folder)
    with pytest.raises(UsageError, match="peft_type"):
        from_peft_state_dict(state, {**config, "peft_type": "LORA"}, tmp_path / "x")
    with pytest.raises(UsageError, match="no 'maskedbert' entry"):
        from_peft_state_dict(state, {k: v for k, v in config.items() if k != "maskedbert"}, tmp_path / "x")
    with pytest.raises(UsageError, match="do not start with"):
        from_peft_state_dict({"bert.x": torch.zeros(1)}, config, tmp_path / "x")
    assert not (tmp_path / "x").exists()
