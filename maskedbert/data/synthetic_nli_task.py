"""The generators of the synthetic NLI tasks (maskedbert/data/synthetic_nli.py) as task-registry splits.

"synthetic-nli": 3-label in-distribution NLI with a planted lexical-overlap shortcut (train 3,000 /
validation 600); "synthetic-hans": its HANS-style challenge set (2 labels, out of distribution,
split "validation", 100 pairs per heuristic and label), with heuristic and subcase in meta.
"""
from __future__ import annotations

from .examples import Example
from .synthetic_nli import HANS_LABELS, NLI3_LABELS, generate_challenge, generate_nli

__all__ = ["nli_examples", "challenge_examples", "NLI3_LABELS", "HANS_LABELS", "TRAIN_SIZE", "DEV_SIZE",
           "CHALLENGE_PER_CELL"]

TRAIN_SIZE, DEV_SIZE, CHALLENGE_PER_CELL = 3000, 600, 100


def _to_examples(task: str, split: str, rows: list[dict]) -> list[Example]:
    return [Example(id=f"{task}-{split}-{r['id']}", text_a=r["premise"], text_b=r["hypothesis"], label=r["label"],
                    meta={k: r[k] for k in ("heuristic", "subcase") if k in r}) for r in rows]


def nli_examples(split: str, seed: int = 0) -> list[Example]:
    sizes = {"train": TRAIN_SIZE, "validation": DEV_SIZE}
    if split not in sizes:
        raise ValueError(f"split must be one of {sorted(sizes)} for synthetic-nli, got {split!r}")
    rows = generate_nli(sizes[split], seed=seed, num_labels=3, id_prefix=split)
    return _to_examples("synthetic-nli", split, rows)


def challenge_examples(split: str, seed: int = 0) -> list[Example]:
    if split != "validation":
        raise ValueError(f"synthetic-hans has only the split 'validation', got {split!r}")
    return _to_examples("synthetic-hans", split, generate_challenge(CHALLENGE_PER_CELL, seed=seed,
                                                                             id_prefix="challenge"))


def _vocabulary() -> list[str]:
    """Every word of the generated data (closed vocabulary: word-level tokenizers for tiny models)."""
    examples = nli_examples("train") + nli_examples("validation") + challenge_examples("validation")
    return sorted({w for e in examples for text in (e.text_a, e.text_b) for w in text.split()})


nli_examples.vocabulary = _vocabulary
challenge_examples.vocabulary = _vocabulary

