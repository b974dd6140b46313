"""PEFT's conventions on masked models: switching masks off, the trainable-parameter summary, scores that
stay fp32 under .to(dtype), warnings that point at the right tool, MaskConfig.load on an adapter, and
one masked_modules."""
import warnings

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import maskedbert as mb  # noqa: E402
from maskedbert.adapters import SparsityDriftWarning  # noqa: E402
from maskedbert.errors import UsageError  # noqa: E402
from maskedbert.patching import MaskSparsityWarning, masked_modules  # noqa: E402

_SIZE = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)


def _model(tmp_path=None, sparsity=0.5):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**_SIZE, num_labels=3)).eval()
    if tmp_path is not None:  # a base checkpoint to save adapters against
        model.save_pretrained(tmp_path / "base")
        model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base").eval()
    mb.apply_masks_(model, mb.MaskConfig(sparsity=sparsity))
    return model


def _logits(model):
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_disable_masks_gives_the_dense_model_and_restores_the_masks():
    model = _model()
    masked = _logits(model)
    dense = transformers.BertForSequenceClassification(transformers.BertConfig(**_SIZE, num_labels=3)).eval()
    dense.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.endswith(("scores", "threshold_tensor"))})
    layers = masked_modules(model)
    with mb.disable_masks(model):
        assert not masked_modules(model)
        torch.testing.assert_close(_logits(model), _logits(dense), rtol=0, atol=0)
        assert not torch.allclose(_logits(model), masked)
    assert masked_modules(model) == layers  # the same layer objects are back
    torch.testing.assert_close(_logits(model), masked, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), mb.disable_masks(model):
        raise RuntimeError("boom")
    assert masked_modules(model) == layers  # back after an error too
    with pytest.raises(ValueError, match="no MaskedLinear"):
        with mb.disable_masks(nn.Sequential(nn.Linear(2, 2))):
            pass


def test_trainable_parameter_summary_counts_scores_separately(capsys):
    model = _model()
    counts = mb.trainable_parameters(model)
    scores = sum(m.scores.numel() for m in masked_modules(model).values())
    head = model.classifier.weight.numel() + model.classifier.bias.numel()
    assert counts["trainable_mask_scores"] == scores and counts["trainable_other"] == head  # weights frozen
    assert counts["all"] == sum(p.numel() for p in model.parameters())
    line = mb.print_trainable_parameters(model)
    assert capsys.readouterr().out.strip() == line
    assert line.startswith(f"trainable params: {scores + head:,} (mask scores {scores:,}")


def test_scores_stay_float32_under_to_dtype_so_small_steps_still_move_them():
    # the trap: in bf16 a score of 0.02 sits on a grid of spacing 2**-13 ~ 1.2e-4, so a 5e-5 step rounds away
    bf16_score = torch.tensor(0.02, dtype=torch.bfloat16)
    assert bf16_score - 5e-5 == bf16_score
    model = _model()
    for layer in masked_modules(model).values():
        layer.scores.grad = torch.zeros_like(layer.scores)
    model.to(torch.bfloat16)
    layer = masked_modules(model)["bert.encoder.layer.0.attention.self.query"]
    assert layer.weight.dtype == torch.bfloat16
    assert layer.scores.dtype == torch.float32 and layer.scores.grad.dtype == torch.float32
    assert layer.threshold_tensor.dtype == torch.float32
    with torch.no_grad():
        layer.scores.fill_(0.02)
    layer.scores.grad.fill_(1.0)
    torch.optim.SGD([layer.scores], lr=5e-5).step()
    assert torch.all(layer.scores < 0.02)  # moved: mask training keeps working in a bf16 model
    model.half()
    assert layer.scores.dtype == torch.float32 and layer.weight.dtype == torch.float16
    model.float()
    assert _logits(model).dtype == torch.float32


def test_sparsity_zero_warns_and_names_the_tools():
    torch.manual_seed(0)
    with pytest.warns(MaskSparsityWarning, match=r"sparsity=0.*MaskTrainingCallback"):
        mb.apply_masks_(transformers.BertModel(transformers.BertConfig(**_SIZE)), mb.MaskConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskSparsityWarning)
        mb.apply_masks_(transformers.BertModel(transformers.BertConfig(**_SIZE)), mb.MaskConfig(sparsity=0.3))
        mb.apply_masks_(transformers.BertModel(transformers.BertConfig(**_SIZE)), mb.MaskConfig(mode="fixed"))


def test_fixed_threshold_drift_points_to_exact_sparsity(tmp_path):
    model = _model(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparsityDriftWarning)
        mb.save_pretrained(model, tmp_path / "at_start")  # exactly 0.5 at init: no warning
    with torch.no_grad():  # scores trained past the fixed threshold: more of them pruned than asked
        for layer in masked_modules(model).values():
            layer.scores.sub_(0.015 * (torch.rand(layer.scores.shape) < 0.2))
    with pytest.warns(SparsityDriftWarning, match=r"exact_topk.*exact_sparsity_"):
        mb.save_pretrained(model, tmp_path / "drifted")


def test_mask_config_load_reads_an_adapter_folder_or_its_config(tmp_path):
    model = _model(tmp_path, sparsity=0.25)
    mb.save_pretrained(model, tmp_path / "adapter")
    want = mb.MaskConfig(sparsity=0.25)
    assert mb.MaskConfig.load(tmp_path / "adapter" / "mask_config.json") == want
    assert mb.MaskConfig.load(tmp_path / "adapter") == want
    want.save(tmp_path / "plain.json")
    assert mb.MaskConfig.load(tmp_path / "plain.json") == want
    with pytest.raises(UsageError, match="without mask_config.json"):
        mb.MaskConfig.load(tmp_path / "base")
    with pytest.raises(UsageError, match="no such file"):
        mb.MaskConfig.load(tmp_path / "missing.json")


def test_masked_modules_has_one_definition():
    import maskedbert.masks
    import maskedbert.patching

    assert maskedbert.patching.masked_modules is maskedbert.masks.masked_modules is mb.masked_modules
    model = _model()
    assert list(mb.masked_modules(model)) == [n for n, m in model.named_modules() if isinstance(m, mb.MaskedLinear)]
