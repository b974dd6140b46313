"""Adapter registering maskedbert/data/synthetic_nli.py (another module) in the task registry.

"synthetic-nli": 3-label in-distribution NLI with a planted lexical-overlap shortcut (train 3,000 /
validation 600); "synthetic-hans": its HANS-style challenge set (2 labels, out of distribution,
split "validation", 100 pairs per heuristic and label), with heuristic and subcase in meta.
"""
from __future__ import annotations

import importlib

from .examples import Example

__all__ = ["build_specs", "TRAIN_SIZE", "DEV_SIZE", "CHALLENGE_PER_CELL"]

TRAIN_SIZE, DEV_SIZE, CHALLENGE_PER_CELL = 3000, 600, 100


def _module():
    try:
        return importlib.import_module("maskedbert.data.synthetic_nli")
    except ModuleNotFoundError as exc:
        if exc.name == "maskedbert.data.synthetic_nli":
            return None
        raise


def _to_examples(task: str, split: str, rows: list[dict]) -> list[Example]:
    return [Example(id=f"{task}-{split}-{r['id']}", text_a=r["premise"], text_b=r["hypothesis"], label=r["label"],
                    meta={k: r[k] for k in ("heuristic", "subcase") if k in r}) for r in rows]


def _nli_examples(split: str, seed: int = 0) -> list[Example]:
    sizes = {"train": TRAIN_SIZE, "validation": DEV_SIZE}
    if split not in sizes:
        raise ValueError(f"split must be one of {sorted(sizes)} for synthetic-nli, got {split!r}")
    rows = _module().generate_nli(sizes[split], seed=seed, num_labels=3, id_prefix=split)
    return _to_examples("synthetic-nli", split, rows)


def _challenge_examples(split: str, seed: int = 0) -> list[Example]:
    if split != "validation":
        raise ValueError(f"synthetic-hans has only the split 'validation', got {split!r}")
    return _to_examples("synthetic-hans", split, _module().generate_challenge(CHALLENGE_PER_CELL, seed=seed,
                                                                             id_prefix="challenge"))


def _vocabulary() -> list[str]:
    """Every word of the generated data (closed vocabulary: word-level tokenizers for tiny models)."""
    examples = _nli_examples("train") + _nli_examples("validation") + _challenge_examples("validation")
    return sorted({w for e in examples for text in (e.text_a, e.text_b) for w in text.split()})


_nli_examples.vocabulary = _vocabulary
_challenge_examples.vocabulary = _vocabulary


def build_specs():
    """TaskSpecs for synthetic-nli and synthetic-hans; [] when maskedbert.data.synthetic_nli is absent."""
    module = _module()
    if module is None:
        return []
    from .tasks import TaskSpec

    return [
        TaskSpec(name="synthetic-nli", label_names=tuple(module.NLI3_LABELS), metric="accuracy",
                 metrics=("accuracy",), generator=_nli_examples),
        TaskSpec(name="synthetic-hans", label_names=tuple(module.HANS_LABELS), metric="accuracy",
                 metrics=("accuracy",), generator=_challenge_examples, ood=True),
    ]
