"""The synthetic NLI generator: seeded, stable ids, the shortcut planted in distribution, broken in the challenge set."""
import pytest

from maskedbert.bias import words
from maskedbert.data import synthetic_nli as sn


def _all_hyp_words_in_premise(ex):
    return set(words(ex["hypothesis"])) <= set(words(ex["premise"]))


def test_same_seed_same_data_and_ids_different_seed_different_data():
    a = sn.make_synthetic_nli(60, 20, 3, seed=1)
    b = sn.make_synthetic_nli(60, 20, 3, seed=1)
    c = sn.make_synthetic_nli(60, 20, 3, seed=2)
    assert a == b
    assert [e["premise"] for e in a["train"]] != [e["premise"] for e in c["train"]]
    ids = [e["id"] for split in ("train", "validation", "challenge") for e in a[split]]
    assert len(ids) == len(set(ids)), "ids must be unique across splits"


def test_in_distribution_shortcut_rate_and_balanced_labels():
    data = sn.generate_nli(3000, seed=0, shortcut_rate=0.9)
    counts = {name: sum(e["label_name"] == name for e in data) for name in sn.NLI3_LABELS}
    assert all(950 <= c <= 1050 for c in counts.values()), counts
    high = [e for e in data if e["high_overlap"]]
    assert all(_all_hyp_words_in_premise(e) for e in high)
    ent_rate = sum(e["label_name"] == "entailment" for e in high) / len(high)
    assert 0.86 <= ent_rate <= 0.94, ent_rate
    low = [e for e in data if not e["high_overlap"]]
    assert not any(_all_hyp_words_in_premise(e) for e in low)
    # every challenge template also occurs in distribution, so the true rule is learnable
    assert {e["subcase"] for e in high} == {s for cell in sn.OVERLAP_TEMPLATES.values() for s in cell}


def test_two_label_variant_merges_neutral_and_contradiction():
    data = sn.generate_nli(300, seed=0, num_labels=2)
    assert {e["label_name"] for e in data} == {"entailment", "non-entailment"}
    assert all(sn.NLI2_LABELS[e["label"]] == e["label_name"] for e in data)


def test_challenge_set_is_balanced_per_heuristic_and_all_overlap():
    data = sn.generate_challenge(10, seed=0)
    assert len(data) == 10 * 2 * len(sn.HEURISTICS)
    for h in sn.HEURISTICS:
        for name in sn.HANS_LABELS:
            assert sum(e["heuristic"] == h and e["label_name"] == name for e in data) == 10
    assert all(_all_hyp_words_in_premise(e) for e in data)
    assert all(sn.HANS_LABELS[e["label"]] == e["label_name"] for e in data)
    subsequence = [e for e in data if e["heuristic"] == "subsequence"]
    assert all(" ".join(words(e["hypothesis"])) in " ".join(words(e["premise"])) for e in subsequence)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_labels"):
        sn.generate_nli(10, num_labels=4)
    with pytest.raises(ValueError, match="shortcut_rate"):
        sn.generate_nli(10, shortcut_rate=1.5)
    with pytest.raises(ValueError, match="num_per_cell"):
        sn.generate_challenge(0)
