"""Bias models and id-based alignment of bias / teacher probabilities."""
import json
import random

import pytest
import torch

from maskedbert import bias
from maskedbert.data.synthetic_nli import generate_challenge, generate_nli


def test_nli_features_by_hand():
    f = dict(zip(bias.FEATURE_NAMES, bias.nli_features("The doctor saw the lawyer .", "The lawyer saw the doctor .")))
    assert f["overlap_rate"] == 1.0 and f["all_words_in_premise"] == 1.0
    assert f["contiguous_subsequence"] == 0.0 and f["negation_in_hypothesis"] == 0.0
    g = dict(zip(bias.FEATURE_NAMES, bias.nli_features("The doctor saw the lawyer .", "Nobody saw the cat .")))
    assert g["overlap_rate"] == pytest.approx(2 / 4) and g["negation_in_hypothesis"] == 1.0
    assert bias.nli_features("A b c .", "b c")[2] == 1.0


@pytest.mark.parametrize("kind", ["hans_features", "features", "hypothesis_only"])
def test_bias_models_learn_the_planted_shortcut(kind):
    train = generate_nli(600, seed=0)
    model = bias.make_bias_model(kind).fit(train, num_labels=3)
    probs = model.predict_probs(train)
    assert set(probs) == {e["id"] for e in train}
    acc = sum(max(range(3), key=lambda c: probs[e["id"]][c]) == e["label"] for e in train) / len(train)
    assert acc > 0.55, acc  # well above the 1/3 chance level
    if kind in ("features", "hans_features"):
        # the overlap bias calls (almost) every challenge pair entailment
        challenge = generate_challenge(5, seed=0)
        cprobs = model.predict_probs(challenge)
        assert sum(cprobs[e["id"]][0] > 0.5 for e in challenge) >= 0.9 * len(challenge)


def test_cross_fit_probs_cover_every_example():
    train = generate_nli(90, seed=0)
    probs = bias.cross_fit_probs("features", train, 3, folds=3)
    assert set(probs) == {e["id"] for e in train}
    assert all(abs(sum(row) - 1) < 1e-6 for row in probs.values())


def test_alignment_is_by_id_not_by_row_order():
    examples = [{"id": f"ex{i}", "premise": "a", "hypothesis": "b", "label": 0} for i in range(6)]
    probs = {f"ex{i}": [i / 10, 1 - i / 10] for i in range(6)}
    shuffled = list(examples)
    random.Random(3).shuffle(shuffled)
    attached = bias.attach_probs(shuffled, dict(reversed(list(probs.items()))))
    for ex in attached:
        i = int(ex["id"][2:])
        assert ex["bias_probs"] == pytest.approx([i / 10, 1 - i / 10])
    aligned = bias.align_probs([e["id"] for e in shuffled], probs)
    assert torch.allclose(aligned[:, 0], torch.tensor([int(e["id"][2:]) / 10 for e in shuffled]))


def test_missing_id_is_an_error_naming_it():
    probs = {"a": [0.5, 0.5]}
    with pytest.raises(ValueError, match="'b'"):
        bias.align_probs(["a", "b"], probs)
    with pytest.raises(ValueError, match="teacher_probs.*'zz'"):
        bias.attach_probs([{"id": "zz"}], probs, field="teacher_probs")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_save_load_round_trip(tmp_path, suffix):
    probs = {"x1": [0.2, 0.8], "7": [1.0, 0.0]}
    path = tmp_path / f"bias{suffix}"
    bias.save_probs(path, probs)
    assert bias.load_probs(path) == probs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_load_records_with_log_probs_and_bad_files(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps([{"id": 3, "log_probs": [0.0, -1e9]}]))
    assert bias.load_probs(path) == {"3": [1.0, 0.0]}
    path.write_text(json.dumps({"a": [0.5, 0.6]}))
    with pytest.raises(ValueError, match="sum to 1"):
        bias.load_probs(path)
    path.write_text(json.dumps({"a": [0.5, 0.5], "b": [0.2, 0.3, 0.5]}))
    with pytest.raises(ValueError, match="3 probabilities"):
        bias.load_probs(path)
    lines = tmp_path / "b.jsonl"
    lines.write_text('{"id": "a", "probs": [1, 0]}\n{"id": "a", "probs": [0, 1]}\n')
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        bias.load_probs(lines)


def test_unfitted_and_bad_kind():
    with pytest.raises(RuntimeError, match="before fit"):
        bias.FeatureBiasModel().predict_probs([{"id": 1, "premise": "a", "hypothesis": "b"}])
    with pytest.raises(ValueError, match="bias model kind"):
        bias.make_bias_model("oracle")
    with pytest.raises(ValueError, match="feature_names"):
        bias.FeatureBiasModel(feature_names=["overlap_rate", "colour"])
    with pytest.raises(ValueError, match="label"):
        bias.FeatureBiasModel().fit([{"id": 1, "premise": "a", "hypothesis": "b", "label": 5}], 3)
