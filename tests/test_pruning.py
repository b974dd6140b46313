"""Pruning logic: cubic schedule, IMP rounds (exact sparsity, rewinding), score-mask sparsity control, mask training."""
import pytest
import torch

from maskedbert import pruning
from maskedbert.config import MaskConfig
from maskedbert.kernels.topk import num_pruned
from maskedbert.patching import apply_masks_, masked_modules


pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = ["entailment", "neutral", "contradiction"]


def test_cubic_schedule_values():
    assert pruning.cubic_sparsity(0, 100) == pytest.approx(0.7)
    assert pruning.cubic_sparsity(100, 100) == pytest.approx(0.9)
    assert pruning.cubic_sparsity(50, 100) == pytest.approx(0.9 - 0.2 * 0.125)
    assert pruning.cubic_sparsity(25, 100, 0.5, 0.9) == pytest.approx(0.9 - 0.4 * 0.75**3)
    assert pruning.cubic_sparsity(500, 100) == pytest.approx(0.9)
    sched = pruning.CubicSparsitySchedule(0.7, 0.9, begin_step=10, end_step=30)
    assert sched(0) == sched(10) == pytest.approx(0.7)
    assert sched(20) == pytest.approx(0.9 - 0.2 * 0.5**3)
    assert sched(30) == sched(99) == pytest.approx(0.9)
    values = [sched(t) for t in range(40)]
    assert values == sorted(values)
    assert pruning.CubicSparsitySchedule.for_training(100).end_step == 80
    with pytest.raises(ValueError, match="end_step"):
        pruning.CubicSparsitySchedule(0.7, 0.9, begin_step=5, end_step=5)


def test_imp_levels():
    assert pruning.imp_sparsity_levels() == pytest.approx([0.1 * r for r in range(1, 10)])
    remaining = pruning.imp_sparsity_levels(0.5, 0.2, amount_of="remaining")
    assert remaining == pytest.approx([0.2, 0.36, 0.488, 0.5])
    assert pruning.imp_sparsity_levels(0.25, 0.1) == pytest.approx([0.1, 0.2, 0.25])
    with pytest.raises(ValueError, match="amount_of"):
        pruning.imp_sparsity_levels(amount_of="all")


def _tiny_model(seed=0, **config_overrides):
    from maskedbert.models import load_model_and_tokenizer

    torch.manual_seed(seed)
    vocab = ["the", "a", "doctor", "lawyer", "saw", "slept", "nobody", "."]
    model, tok = load_model_and_tokenizer("tiny-bert", 3, label_names=LABELS, vocab=vocab,
                                          config_overrides={"hidden_dropout_prob": 0.0,
                                                            "attention_probs_dropout_prob": 0.0, **config_overrides})
    return model, tok


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("rewind_classifier", [False, True])
def test_imp_exact_sparsity_every_round_with_rewinding(scope, rewind_classifier):
    model, _ = _tiny_model()
    apply_masks_(model, MaskConfig(mode="fixed"))
    start = pruning.snapshot_weights(model)
    head = pruning.head_parameter_names(model)
    assert head and all(n.startswith("classifier.") for n in head)
    seen_masks = {}

    def train_round(m, r):  # stands in for training: moves every weight
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)

    def on_level(m, level, r):
        layers = masked_modules(m)
        if scope == "layer":
            for name, layer in layers.items():
                assert int((~layer.mask()).sum()) == num_pruned(layer.weight.numel(), level)
        else:
            total = sum(layer.weight.numel() for layer in layers.values())
            assert sum(int((~layer.mask()).sum()) for layer in layers.values()) == num_pruned(total, level)
        for name, layer in layers.items():  # pruned weights stay pruned
            if name in seen_masks:
                assert not (layer.mask() & ~seen_masks[name]).any()
            seen_masks[name] = layer.mask().clone()
        for name, p in m.named_parameters():  # rewound (body), head only if asked
            if name in start:
                same = torch.equal(p.detach(), start[name])
                assert same == (rewind_classifier or name not in head), name

    records = pruning.iterative_magnitude_pruning(model, train_round, [0.2, 0.5, 0.9], scope=scope,
                                                  rewind_classifier=rewind_classifier, on_level=on_level)
    assert [r["level"] for r in records] == [0.2, 0.5, 0.9]
    assert all(abs(r["sparsity"] - r["level"]) < 1e-3 for r in records)
    assert len(seen_masks) == len(masked_modules(model))


def test_imp_rewinds_to_a_given_state_and_checks_it():
    model, _ = _tiny_model()
    apply_masks_(model, MaskConfig(mode="fixed"))
    other, _ = _tiny_model(seed=1)
    target = {n: p.detach().clone() for n, p in other.named_parameters()}
    pruning.iterative_magnitude_pruning(model, lambda m, r: None, [0.3], rewind_state=target, rewind_classifier=True)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), target[name])
    with pytest.raises(ValueError, match="lacks parameter"):
        pruning.rewind_weights_(model, {})
    with pytest.raises(ValueError, match="non-decreasing"):
        pruning.iterative_magnitude_pruning(model, lambda m, r: None, [0.5, 0.4])
    scores_model, _ = _tiny_model()
    apply_masks_(scores_model, MaskConfig(mode="scores"))
    with pytest.raises(ValueError, match="mode 'fixed'"):
        pruning.iterative_magnitude_pruning(scores_model, lambda m, r: None, [0.5])


def test_load_rewind_state_from_a_saved_model(tmp_path):
    model, _ = _tiny_model()
    model.save_pretrained(tmp_path / "step-10")
    state = pruning.load_rewind_state(tmp_path / "step-10")
    other, _ = _tiny_model(seed=3)
    pruning.rewind_weights_(other, state, rewind_classifier=True)
    for (n, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        assert torch.equal(a, b), n


def test_threshold_reset_and_exact_sparsity_with_tied_scores():
    model, _ = _tiny_model()
    apply_masks_(model, MaskConfig(mode="scores", sparsity=0.7))  # scores are exactly 0 or 2*tau: ties
    assert pruning.score_mask_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    pruning.reset_thresholds_(model, 0.7)
    assert pruning.score_mask_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    # with every kept score tied, the reference reset cannot go to 0.8: the guard keeps the threshold
    pruning.reset_thresholds_(model, 0.8)
    assert pruning.score_mask_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    pruning.exact_sparsity_(model, 0.8)
    for layer in masked_modules(model).values():
        assert int((~layer.mask()).sum()) == num_pruned(layer.weight.numel(), 0.8)
    pruning.exact_sparsity_(model, 0.85, scope="global")
    layers = list(masked_modules(model).values())
    total = sum(layer.weight.numel() for layer in layers)
    assert sum(int((~layer.mask()).sum()) for layer in layers) == num_pruned(total, 0.85)


def test_threshold_reset_reaches_target_on_distinct_scores():
    model, _ = _tiny_model()
    apply_masks_(model, MaskConfig(mode="scores", score_init="magnitude_soft"))
    pruning.reset_thresholds_(model, 0.6)
    for layer in masked_modules(model).values():
        assert int((~layer.mask()).sum()) == int(layer.weight.numel() * 0.6)


def _encoded(tok, n=24):
    from maskedbert.data.collate import PadCollator, encode_examples
    from maskedbert.data.examples import Example

    pairs = [("the doctor saw the lawyer .", "the lawyer saw the doctor ."), ("the doctor slept .", "nobody slept .")]
    examples = [Example(str(i), *pairs[i % 2], i % 3) for i in range(n)]
    return encode_examples(examples, tok, max_length=16), PadCollator(tok.pad_token_id)


@pytest.mark.parametrize("train_classifier", [False, True])
def test_mask_training_changes_only_scores(train_classifier, tmp_path):
    from maskedbert.losses import make_loss_fn
    from maskedbert.train import TrainConfig

    model, tok = _tiny_model()
    apply_masks_(model, MaskConfig(mode="scores", sparsity=0.7, train_classifier=train_classifier))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dataset, collate = _encoded(tok)
    schedule = pruning.CubicSparsitySchedule.for_training(6, 0.7, 0.9)
    controller = pruning.MaskSparsityController(model, schedule, method="exact_topk")
    controller.apply(0)
    losses = pruning.train_steps(model, dataset, collate, make_loss_fn("ce"),
                                 TrainConfig(output_dir=str(tmp_path), max_steps=6, batch_size=8, lr=1e-2,
                                             warmup_ratio=0.1, progress=False),
                                 lr_scores=1e-2, step_callback=controller)
    assert len(losses) == 6
    score_names = {n for n in before if n.endswith(".scores")}
    assert score_names
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if name in score_names:
            continue
        should_change = train_classifier and name.startswith("classifier.")
        assert changed == should_change, name
    assert any(not torch.equal(dict(model.named_parameters())[n].detach(), before[n]) for n in score_names)
    assert [round(t, 6) for _, t, _ in controller.history][-1] == 0.9
    assert pruning.score_mask_sparsity(model) == pytest.approx(0.9, abs=1e-3)


def test_controller_threshold_reset_follows_schedule_and_finalize_is_exact():
    model, _ = _tiny_model()
    apply_masks_(model, MaskConfig(mode="scores", score_init="magnitude_soft"))
    schedule = pruning.CubicSparsitySchedule(0.5, 0.9, 0, 10)
    controller = pruning.MaskSparsityController(model, schedule, reset_every=5)
    for step in range(11):
        controller(step)
    assert [s for s, _, _ in controller.history] == [0, 5, 10]
    for _, target, measured in controller.history:
        assert measured == pytest.approx(target, abs=2e-3)
    assert controller.finalize() == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(ValueError, match="method"):
        pruning.MaskSparsityController(model, schedule, method="random")


def test_imp_start_round_needs_the_original_rewind_state():
    import torch.nn as nn

    import maskedbert as mb

    model = nn.Sequential(nn.Linear(6, 5))
    mb.apply_masks_(model, mb.MaskConfig(mode="fixed", train_weights=True, target_modules="all-linear"))
    with pytest.raises(ValueError, match="rewind_state"):
        pruning.iterative_magnitude_pruning(model, lambda m, r: None, [0.2, 0.4], start_round=1)
    with pytest.raises(ValueError, match="start_round"):
        pruning.iterative_magnitude_pruning(model, lambda m, r: None, [0.2], start_round=-1)
    trained = []
    records = pruning.iterative_magnitude_pruning(model, lambda m, r: trained.append(r), [0.2, 0.4],
                                                  rewind_state=pruning.snapshot_weights(model), start_round=1)
    assert trained == [1] and [r["round"] for r in records] == [1]
