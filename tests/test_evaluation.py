"""OOD evaluation on hand-made predictions: HANS mapping, per-heuristic accuracy, PAWS, FEVER-Symmetric."""
import pytest
import torch

from maskedbert import evaluation as ev
from maskedbert.data.examples import Example


pytestmark = pytest.mark.usefixtures("one_torch_thread")

MNLI = ["entailment", "neutral", "contradiction"]
ROBERTA_MNLI = ["contradiction", "neutral", "entailment"]


def _hans(heuristic, label_name, i):
    return {"id": f"h{i}", "premise": "p", "hypothesis": "h", "label_name": label_name, "heuristic": heuristic}


HANS_EXAMPLES = [
    _hans("lexical_overlap", "entailment", 0),
    _hans("lexical_overlap", "non-entailment", 1),
    _hans("lexical_overlap", "non-entailment", 2),
    _hans("subsequence", "entailment", 3),
    _hans("subsequence", "non-entailment", 4),
    _hans("constituent", "entailment", 5),
]


def test_hans_neutral_and_contradiction_both_count_as_non_entailment():
    # predictions in MNLI order: ent, neutral, contradiction, ent, ent, contradiction
    preds = torch.tensor([0, 1, 2, 0, 0, 2])
    m = ev.hans_metrics(preds, HANS_EXAMPLES, MNLI)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["entailment"] == pytest.approx(2 / 3)
    assert m["non_entailment"] == pytest.approx(2 / 3)
    assert m["lexical_overlap"] == 1.0
    assert m["subsequence"] == pytest.approx(0.5)
    assert m["subsequence/non_entailment"] == 0.0
    assert m["constituent"] == 0.0
    assert m["constituent/entailment"] == 0.0
    assert "constituent/non_entailment" not in m


def test_hans_label_order_follows_the_model_config():
    class Config:
        id2label = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}

    class Model:
        config = Config()

    names = ev.model_label_names(Model())
    assert [ev.normalize_name(n) for n in names] == ROBERTA_MNLI
    preds = [2, 0, 1, 2, 2, 0]  # the same decisions as above in RoBERTa's order
    assert ev.hans_metrics(preds, HANS_EXAMPLES, names)["accuracy"] == pytest.approx(4 / 6)


def test_generic_label_names_need_a_fallback():
    generic = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    with pytest.raises(ValueError, match="fallback_label_names"):
        ev.model_label_names(generic)
    assert ev.model_label_names(generic, MNLI) == MNLI
    with pytest.raises(ValueError, match="2 names"):
        ev.model_label_names(generic, ["a", "b"])


def test_hans_reads_maskedbert_examples_with_meta():
    examples = [Example("a", "p", "h", 0, {"heuristic": "subsequence"}),
                Example("b", "p", "h", 1, {"heuristic": "subsequence"})]
    m = ev.hans_metrics([0, 0], examples, ["entailment", "non_entailment"])
    assert m == {"accuracy": 0.5, "entailment": 1.0, "subsequence": 0.5, "subsequence/entailment": 1.0,
                 "non_entailment": 0.0, "subsequence/non_entailment": 0.0}


def test_paws_duplicate_and_non_duplicate_accuracy():
    examples = [Example(str(i), "a", "b", y) for i, y in enumerate([1, 1, 0, 0, 0])]
    # a QQP head named (not_duplicate, duplicate)
    m = ev.paws_metrics([1, 0, 1, 0, 0], examples, ["not_duplicate", "duplicate"])
    assert m == {"accuracy": 0.6, "duplicate": 0.5, "non_duplicate": pytest.approx(2 / 3)}
    # the same head with its outputs in the other order
    flipped = ev.paws_metrics([0, 1, 0, 1, 1], examples, ["duplicate", "not_duplicate"])
    assert flipped == m


def test_fever_symmetric_accuracy_per_class_and_nei_is_wrong():
    examples = [Example(str(i), "c", "e", y) for i, y in enumerate([0, 0, 1, 1])]
    names = ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"]
    m = ev.fever_symmetric_metrics([0, 2, 1, 0], examples, names)
    assert m == {"accuracy": 0.5, "supports": 0.5, "refutes": 0.5}
    assert ev.ood_metrics("fever-symmetric-v2", [0, 2, 1, 0], examples, names) == m


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        ev.hans_metrics([0], HANS_EXAMPLES, MNLI)
    with pytest.raises(ValueError, match="output indices"):
        ev.hans_metrics([0, 1, 2, 3, 0, 0], HANS_EXAMPLES, MNLI)
    with pytest.raises(ValueError, match="no 'entailment'"):
        ev.hans_metrics([0] * 6, HANS_EXAMPLES, ["a", "b", "c"])
    with pytest.raises(ValueError, match="OOD kind"):
        ev.ood_metrics("anli", [0], HANS_EXAMPLES[:1], MNLI)
    with pytest.raises(ValueError, match="heuristic"):
        ev.hans_metrics([0], [{"id": 1, "label_name": "entailment"}], MNLI)


def test_evaluate_ood_runs_a_tiny_model():
    pytest.importorskip("transformers")
    from maskedbert.data.synthetic_nli import generate_challenge
    from maskedbert.models import load_model_and_tokenizer

    challenge = generate_challenge(2, seed=0)
    vocab = sorted({w for e in challenge for w in (e["premise"] + " " + e["hypothesis"]).split()})
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny-bert", 3, label_names=MNLI, vocab=vocab)
    logits = ev.predict_logits(model, tok, challenge, batch_size=5)
    assert logits.shape == (len(challenge), 3)
    m = ev.evaluate_ood(model, tok, "hans", challenge)
    expected = ev.hans_metrics(logits.argmax(1), challenge, MNLI)
    assert m == pytest.approx(expected)
