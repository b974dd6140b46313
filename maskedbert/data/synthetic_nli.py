"""A seeded synthetic NLI task with a planted lexical-overlap shortcut, and a HANS-style challenge set.

In-distribution data (MNLI-style, 3 labels or 2): when every hypothesis word appears in the premise,
the pair is entailment most of the time (`shortcut_rate`, default 0.9), so a model that learns
"overlap => entailment" does well in distribution. The challenge set is built from the same
templates but balanced: within each HANS heuristic (lexical_overlap, subsequence, constituent) half
the pairs are entailment and half are not, so the shortcut gets ~100% on entailment and ~0% on
non-entailment, exactly the HANS pattern (McCoy et al. 2019). The true rule is learnable from the
in-distribution data: every template, entailing or not, occurs there.

Everything is plain lists of dicts (no `datasets`); ids are stable for a given seed and size.
"""
from __future__ import annotations

import random
from typing import Callable

NLI3_LABELS = ("entailment", "neutral", "contradiction")  # the GLUE/`datasets` MNLI order
NLI2_LABELS = ("entailment", "non-entailment")
HANS_LABELS = ("entailment", "non-entailment")
HEURISTICS = ("lexical_overlap", "subsequence", "constituent")

_NOUNS = ("doctor", "lawyer", "student", "artist", "judge", "actor", "secretary", "manager", "tourist",
          "banker", "author", "senator", "president", "scientist", "athlete", "professor")
# past tense == past participle, so the same word serves active and passive templates
_TRANSITIVE = ("helped", "called", "paid", "thanked", "recommended", "introduced", "contacted", "avoided",
               "admired", "mentioned", "supported", "watched", "visited")
_INTRANSITIVE = ("slept", "waited", "danced", "laughed", "left", "arrived", "smiled", "ran")
_PREPOSITIONS = ("near", "behind", "beside")
_SURE_ADVERBS = ("certainly", "clearly", "obviously", "definitely")
_UNSURE_ADVERBS = ("maybe", "perhaps", "probably", "supposedly")
_FACTIVE = ("knew", "learned", "realized", "noticed")
_NONFACTIVE = ("believed", "hoped", "thought", "assumed", "suspected")
_SYNONYM = {"helped": "assisted", "called": "phoned", "paid": "compensated", "thanked": "praised",
            "recommended": "endorsed", "introduced": "presented", "contacted": "reached", "avoided": "evaded",
            "admired": "respected", "mentioned": "named", "supported": "backed", "watched": "observed",
            "visited": "saw"}

Template = Callable[[random.Random], tuple[str, str]]


def _nouns(rng: random.Random, k: int) -> list[str]:
    return rng.sample(_NOUNS, k)


def _sentence(*words: str) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + " ."


# ---- high-overlap templates: (heuristic, entails?) -> {subcase: template} ------------------------------
def _le_passive(rng):
    a, b = _nouns(rng, 2)
    v = rng.choice(_TRANSITIVE)
    return _sentence("the", a, "was", v, "by the", b), _sentence("the", b, v, "the", a)


def _le_relative_clause(rng):
    a, b, c = _nouns(rng, 3)
    v1, v2 = rng.sample(_TRANSITIVE, 2)
    return _sentence("the", a, "who", v1, "the", b, v2, "the", c), _sentence("the", a, v2, "the", c)


def _ln_swap(rng):
    a, b = _nouns(rng, 2)
    v = rng.choice(_TRANSITIVE)
    return _sentence("the", a, v, "the", b), _sentence("the", b, v, "the", a)


def _ln_passive(rng):
    a, b = _nouns(rng, 2)
    v = rng.choice(_TRANSITIVE)
    return _sentence("the", a, "was", v, "by the", b), _sentence("the", a, v, "the", b)


def _ln_relative_clause(rng):
    a, b, c = _nouns(rng, 3)
    v1, v2 = rng.sample(_TRANSITIVE, 2)
    return _sentence("the", a, "who", v1, "the", b, v2, "the", c), _sentence("the", b, v2, "the", c)


def _se_pp_on_object(rng):
    a, b, c = _nouns(rng, 3)
    v, p = rng.choice(_TRANSITIVE), rng.choice(_PREPOSITIONS)
    return _sentence("the", a, v, "the", b, p, "the", c), _sentence("the", a, v, "the", b)


def _se_relative_clause_on_object(rng):
    a, b, c = _nouns(rng, 3)
    v1, v2 = rng.sample(_TRANSITIVE, 2)
    return _sentence("the", a, v1, "the", b, "who", v2, "the", c), _sentence("the", a, v1, "the", b)


def _sn_pp_on_subject(rng):
    a, b, c = _nouns(rng, 3)
    v, p = rng.choice(_TRANSITIVE), rng.choice(_PREPOSITIONS)
    return _sentence("the", a, p, "the", b, v, "the", c), _sentence("the", b, v, "the", c)


def _sn_past_participle(rng):
    a, b = _nouns(rng, 2)
    v, vi = rng.choice(_TRANSITIVE), rng.choice(_INTRANSITIVE)
    return _sentence("the", a, v, "by the", b, vi), _sentence("the", b, vi)


def _clause_then_first(connective: str) -> Template:
    """"<connective> a v1, the b v2" -> "the a v1": entailed after "since", not after "if"."""
    def template(rng):
        a, b = _nouns(rng, 2)
        v1, v2 = rng.sample(_INTRANSITIVE, 2)
        return _sentence(connective, a, v1, ", the", b, v2), _sentence("the", a, v1)
    return template


def _adverb_then_clause(adverbs: tuple[str, ...]) -> Template:
    """"<adverb> the a v the b" -> "the a v the b": entailed for sure adverbs, not for unsure ones."""
    def template(rng):
        a, b = _nouns(rng, 2)
        return (_sentence(rng.choice(adverbs), "the", a, (v := rng.choice(_TRANSITIVE)), "the", b),
                _sentence("the", a, v, "the", b))
    return template


def _embedded_under_verb(verbs: tuple[str, ...]) -> Template:
    """"the a <verb> that the b vi" -> "the b vi": entailed under factive verbs, not nonfactive ones."""
    def template(rng):
        a, b = _nouns(rng, 2)
        vi = rng.choice(_INTRANSITIVE)
        return _sentence("the", a, rng.choice(verbs), "that the", b, vi), _sentence("the", b, vi)
    return template


_ce_since, _cn_if = _clause_then_first("since the"), _clause_then_first("if the")
_ce_adverb, _cn_adverb = _adverb_then_clause(_SURE_ADVERBS), _adverb_then_clause(_UNSURE_ADVERBS)
_ce_factive, _cn_nonfactive = _embedded_under_verb(_FACTIVE), _embedded_under_verb(_NONFACTIVE)


def _cn_disjunction(rng):
    a, b = _nouns(rng, 2)
    v1, v2 = rng.sample(_INTRANSITIVE, 2)
    return _sentence("the", a, v1, ", or the", b, v2), _sentence("the", b, v2)


OVERLAP_TEMPLATES: dict[tuple[str, bool], dict[str, Template]] = {
    ("lexical_overlap", True): {"le_passive": _le_passive, "le_relative_clause": _le_relative_clause},
    ("lexical_overlap", False): {"ln_subject_object_swap": _ln_swap, "ln_passive": _ln_passive,
                                 "ln_relative_clause": _ln_relative_clause},
    ("subsequence", True): {"se_PP_on_obj": _se_pp_on_object,
                            "se_relative_clause_on_obj": _se_relative_clause_on_object},
    ("subsequence", False): {"sn_PP_on_subject": _sn_pp_on_subject, "sn_past_participle": _sn_past_participle},
    ("constituent", True): {"ce_embedded_under_since": _ce_since, "ce_adverb": _ce_adverb,
                            "ce_embedded_under_verb": _ce_factive},
    ("constituent", False): {"cn_embedded_under_if": _cn_if, "cn_adverb": _cn_adverb,
                             "cn_embedded_under_verb": _cn_nonfactive, "cn_disjunction": _cn_disjunction},
}


# ---- low-overlap templates (in-distribution only) ------------------------------------------------
def _low_entailment_paraphrase(rng):
    a, b = _nouns(rng, 2)
    v = rng.choice(_TRANSITIVE)
    return _sentence("the", a, v, "the", b), _sentence("a person", _SYNONYM[v], "someone")


def _low_neutral_unrelated(rng):
    a, b, c = _nouns(rng, 3)
    return _sentence("the", a, rng.choice(_TRANSITIVE), "the", b), _sentence("a", c, rng.choice(_INTRANSITIVE))


def _low_contradiction_nobody(rng):
    a, b = _nouns(rng, 2)
    vi = rng.choice(_INTRANSITIVE)
    return _sentence("the", a, "and the", b, vi), _sentence(rng.choice(("nobody", "no one")), vi)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _pick_template(rng: random.Random, entails: bool) -> tuple[str, str, Template]:
    heuristic = rng.choice(HEURISTICS)
    subcase, template = rng.choice(sorted(OVERLAP_TEMPLATES[(heuristic, entails)].items()))
    return heuristic, subcase, template


def generate_nli(num_examples: int, *, seed: int = 0, num_labels: int = 3, shortcut_rate: float = 0.9,
                 id_prefix: str = "nli") -> list[dict]:
    """In-distribution NLI pairs with the overlap shortcut planted.

    Labels are balanced. Entailment pairs have full lexical overlap with probability `shortcut_rate`
    (else a low-overlap paraphrase); neutral pairs have full overlap (a non-entailing template) with
    probability 1 - shortcut_rate (else an unrelated hypothesis); contradictions ("nobody ...") never
    do. So among full-overlap pairs, P(entailment) = shortcut_rate.

    Each example: id, premise, hypothesis, label (int, index into `label_names`), label_name,
    heuristic ("none" for low-overlap pairs), subcase, high_overlap (bool).
    With num_labels=2, neutral and contradiction become "non-entailment".
    """
    _check_int("num_examples", num_examples, 0)
    if num_labels not in (2, 3):
        raise ValueError(f"num_labels must be 2 or 3, got {num_labels!r}")
    if not isinstance(shortcut_rate, (int, float)) or not 0.0 <= shortcut_rate <= 1.0:
        raise ValueError(f"shortcut_rate must be in [0, 1], got {shortcut_rate!r}")
    if not isinstance(id_prefix, str) or not id_prefix:
        raise ValueError(f"id_prefix must be a non-empty string, got {id_prefix!r}")
    rng = random.Random(f"synthetic-nli/{seed}/{id_prefix}")
    label_names = NLI3_LABELS if num_labels == 3 else NLI2_LABELS
    examples = []
    for index in range(num_examples):
        gold = NLI3_LABELS[index % 3]  # balanced, then shuffled below
        high = rng.random() < (shortcut_rate if gold == "entailment" else 1 - shortcut_rate)
        if gold == "contradiction":
            high = False
        if high:
            heuristic, subcase, template = _pick_template(rng, entails=gold == "entailment")
        else:
            heuristic = "none"
            subcase, template = {
                "entailment": ("low_overlap_paraphrase", _low_entailment_paraphrase),
                "neutral": ("low_overlap_unrelated", _low_neutral_unrelated),
                "contradiction": ("low_overlap_negation", _low_contradiction_nobody),
            }[gold]
        premise, hypothesis = template(rng)
        name = gold if num_labels == 3 or gold == "entailment" else "non-entailment"
        examples.append({"premise": premise, "hypothesis": hypothesis, "label": label_names.index(name),
                         "label_name": name, "heuristic": heuristic, "subcase": subcase, "high_overlap": high})
    rng.shuffle(examples)
    for index, example in enumerate(examples):
        example["id"] = f"{id_prefix}-{index:06d}"
    return [{"id": e.pop("id"), **e} for e in examples]


def generate_challenge(num_per_cell: int, *, seed: int = 0, id_prefix: str = "hans") -> list[dict]:
    """HANS-style challenge pairs: every (heuristic, label) cell gets `num_per_cell` examples.

    Every hypothesis's words all occur in its premise. Fields as HANS: id, premise, hypothesis,
    label (0 entailment, 1 non-entailment), label_name, heuristic, subcase.
    """
    _check_int("num_per_cell", num_per_cell, 1)
    rng = random.Random(f"synthetic-hans/{seed}/{id_prefix}")
    examples = []
    for heuristic in HEURISTICS:
        for entails in (True, False):
            subcases = sorted(OVERLAP_TEMPLATES[(heuristic, entails)].items())
            for i in range(num_per_cell):
                subcase, template = subcases[i % len(subcases)]
                premise, hypothesis = template(rng)
                name = "entailment" if entails else "non-entailment"
                examples.append({"id": f"{id_prefix}-{len(examples):06d}", "premise": premise,
                                 "hypothesis": hypothesis, "label": HANS_LABELS.index(name), "label_name": name,
                                 "heuristic": heuristic, "subcase": subcase})
    return examples


def make_synthetic_nli(train_size: int = 3000, dev_size: int = 600, challenge_per_cell: int = 100, *,
                       seed: int = 0, num_labels: int = 3, shortcut_rate: float = 0.9) -> dict:
    """Train / validation (in distribution) and challenge splits, plus label names.

    Returns {"train": [...], "validation": [...], "challenge": [...], "label_names": [...],
    "challenge_label_names": ["entailment", "non-entailment"]}.
    """
    return {
        "train": generate_nli(train_size, seed=seed, num_labels=num_labels, shortcut_rate=shortcut_rate,
                              id_prefix="train"),
        "validation": generate_nli(dev_size, seed=seed, num_labels=num_labels, shortcut_rate=shortcut_rate,
                                   id_prefix="validation"),
        "challenge": generate_challenge(challenge_per_cell, seed=seed, id_prefix="challenge"),
        "label_names": list(NLI3_LABELS if num_labels == 3 else NLI2_LABELS),
        "challenge_label_names": list(HANS_LABELS),
    }
