"""Default target modules for DeBERTa (v1) and MPNet, the one Conv1D refusal type, load_masks' hint."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import maskedbert as mb  # noqa: E402
from maskedbert.architectures import UnsupportedLayerError  # noqa: E402
from maskedbert.errors import UsageError  # noqa: E402
from maskedbert.patching import masked_modules  # noqa: E402

VOCAB = 99
_SIZE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _deberta(relative=True):
    extra = dict(relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=16) if relative else {}
    torch.manual_seed(0)
    return transformers.DebertaForSequenceClassification(transformers.DebertaConfig(**_SIZE, **extra)).eval()


def _mpnet(base=False):
    torch.manual_seed(0)
    config = transformers.MPNetConfig(**_SIZE)
    cls = transformers.MPNetModel if base else transformers.MPNetForSequenceClassification
    return cls(config).eval()


def _ids():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (2, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _layer_names(model):
    # collapse layer indices: the defaults are per-layer suffixes
    import re
    return sorted({re.sub(r"\.\d+\.", ".*.", name) for name in masked_modules(model)})


def test_deberta_v1_masks_fused_in_proj_as_one_matrix_and_ffn():
    model = _deberta()
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))
    assert _layer_names(model) == [
        "deberta.encoder.layer.*.attention.output.dense",
        "deberta.encoder.layer.*.attention.self.in_proj",
        "deberta.encoder.layer.*.intermediate.dense",
        "deberta.encoder.layer.*.output.dense",
    ]
    in_proj = masked_modules(model)["deberta.encoder.layer.0.attention.self.in_proj"]
    assert tuple(in_proj.weight.shape) == (3 * 32, 32)  # q, k and v in one mask
    assert in_proj.sparsity == pytest.approx(0.5)
    # the relative-position projections and the head (ContextPooler, classifier) stay dense
    assert all("pos_" not in name and not name.startswith(("pooler", "classifier")) for name in masked_modules(model))


def test_mpnet_masks_attention_and_ffn_and_the_base_models_pooler():
    model = _mpnet()
    mb.apply_masks_(model, mb.MaskConfig())
    assert _layer_names(model) == [
        "mpnet.encoder.layer.*.attention.attn.k",
        "mpnet.encoder.layer.*.attention.attn.o",
        "mpnet.encoder.layer.*.attention.attn.q",
        "mpnet.encoder.layer.*.attention.attn.v",
        "mpnet.encoder.layer.*.intermediate.dense",
        "mpnet.encoder.layer.*.output.dense",
    ]
    base = mb.apply_masks_(_mpnet(base=True), mb.MaskConfig())
    assert "pooler.dense" in masked_modules(base)  # like BERT's defaults, the pooler when there is one


@pytest.mark.parametrize("build", [_deberta, _mpnet], ids=["deberta", "mpnet"])
def test_identity_at_zero_sparsity_and_exact_merge(build, tmp_path):
    model = build()
    with torch.no_grad():
        dense = model(**_ids()).logits
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.0))
    with torch.no_grad():
        torch.testing.assert_close(model(**_ids()).logits, dense, rtol=0, atol=0)
    mb.merge_and_unload(mb.apply_masks_(build(), mb.MaskConfig(sparsity=0.6)))  # merge works
    pruned = mb.apply_masks_(build(), mb.MaskConfig(sparsity=0.6))
    with torch.no_grad():
        masked_logits = pruned(**_ids()).logits
        assert not torch.allclose(masked_logits, dense)
        torch.testing.assert_close(mb.merge_and_unload(pruned)(**_ids()).logits, masked_logits)


def _gpt2():
    return transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB))


@pytest.mark.parametrize("config", [
    mb.MaskConfig(), mb.MaskConfig(target_modules="all-linear"), mb.MaskConfig(target_modules=["c_attn"]),
    mb.MaskConfig(target_modules=r".*\.attn\.c_attn"),
], ids=["defaults", "all-linear", "suffix", "regex"])
def test_conv1d_refusal_has_one_exception_type_on_every_path(config):
    with pytest.raises(UnsupportedLayerError, match="Conv1D") as info:
        mb.apply_masks_(_gpt2(), config)
    # one type, catchable as either of the types the paths used to raise, and as a user mistake
    assert isinstance(info.value, UsageError) and isinstance(info.value, TypeError)


def test_conv1d_refusal_from_default_target_modules():
    from maskedbert.architectures import default_target_modules

    with pytest.raises(UnsupportedLayerError, match="Conv1D"):
        default_target_modules("gpt2")


def test_load_masks_on_an_unmasked_model_says_to_apply_masks_first(tmp_path):
    model = _mpnet()
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))
    path = tmp_path / "masks.safetensors"
    mb.save_masks(model, path)
    with pytest.raises(UsageError, match=r"apply_masks_\(model, config\) first") as info:
        mb.load_masks(_mpnet(), path)
    assert "attn" not in str(info.value)  # no list of layer names
    fresh = mb.apply_masks_(_mpnet(), mb.MaskConfig())
    mb.load_masks(fresh, path)  # after apply_masks_ the same file loads
    assert all(m.sparsity == pytest.approx(0.5) for m in masked_modules(fresh).values())


def test_from_linear_refuses_conv1d_with_the_same_type():
    from transformers.pytorch_utils import Conv1D

    from maskedbert import MaskedLinear
    from maskedbert.architectures import UnsupportedLayerError

    with pytest.raises(UnsupportedLayerError, match="Conv1D"):
        MaskedLinear.from_linear(Conv1D(4, 3))
    with pytest.raises(TypeError):  # still a TypeError for existing except clauses
        MaskedLinear.from_linear(Conv1D(4, 3))
