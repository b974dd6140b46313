"""Out-of-distribution evaluation: HANS, PAWS and FEVER-Symmetric (the Trainer's evaluator on an encoded
dev set is maskedbert.train.evaluator).

Predictions are the model's output indices (argmax of its logits). They are turned into label names
with the model's own label order (config.id2label), so a RoBERTa MNLI head that orders
(contradiction, neutral, entailment) is read correctly; only when the config carries the default
names ("LABEL_0", ...) do the training task's label names (`fallback_label_names`) stand in.

    HANS: argmax over the three MNLI classes, then neutral and contradiction both count as
          non-entailment; accuracy overall, per gold label, per heuristic (lexical_overlap,
          subsequence, constituent) and per heuristic x label.
    PAWS: accuracy overall, on duplicates (paraphrases) and on non-duplicates.
    FEVER-Symmetric: accuracy overall and per gold class (SUPPORTS / REFUTES); a NOT ENOUGH INFO
          prediction is wrong.

Examples are plain dicts (synthetic_nli: label_name / label, heuristic) or maskedbert.data.Example
(label index into the task's label names, heuristic in meta).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch

from maskedbert._atomic import write_text_atomic as _write_text_atomic
from maskedbert.progress import track

HANS_DATASET_LABELS = ("entailment", "non-entailment")
PAWS_DATASET_LABELS = ("not_paraphrase", "paraphrase")
FEVER_DATASET_LABELS = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")
_POSITIVE_PARAPHRASE = {"duplicate", "paraphrase", "equivalent", "is_duplicate"}
OOD_KINDS = ("hans", "paws", "fever_symmetric")


def normalize_name(name: Any) -> str:
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return {"not_entailment": "non_entailment", "nonentailment": "non_entailment"}.get(key, key)


def model_label_names(model_or_config: Any, fallback_label_names: Sequence[str] | None = None) -> list[str]:
    """Names of the model's outputs in index order, from config.id2label (a model, config, dict or list).

    Default names ("LABEL_0", ...) carry no meaning: then `fallback_label_names` (the training task's
    labels, in the order the head was trained with) are used, and are required.
    """
    if isinstance(model_or_config, (list, tuple)):
        names = [str(n) for n in model_or_config]
    else:
        config = getattr(model_or_config, "config", model_or_config)
        id2label = config if isinstance(config, Mapping) else getattr(config, "id2label", None)
        if not id2label:
            names = []
        else:
            names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        if fallback_label_names is None:
            raise ValueError("the model config has no label names (id2label is empty or LABEL_i); "
                             "pass fallback_label_names, the training task's labels in head order")
        fallback = [str(n) for n in fallback_label_names]
        if names and len(fallback) != len(names):
            raise ValueError(f"fallback_label_names has {len(fallback)} names but the model has {len(names)} outputs")
        return fallback
    return names


def _pred_names(predictions, label_names: Sequence[str]) -> list[str]:
    preds = predictions.tolist() if isinstance(predictions, torch.Tensor) else list(predictions)
    out = []
    for p in preds:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(label_names):
            raise ValueError(f"predictions must be output indices in [0, {len(label_names)}), got {p!r}")
        out.append(normalize_name(label_names[p]))
    return out


def _gold_name(example: Any, dataset_label_names: Sequence[str]) -> str:
    if isinstance(example, Mapping):
        if "label_name" in example:
            return normalize_name(example["label_name"])
        label = example.get("label")
    else:
        label = getattr(example, "label", None)
    if isinstance(label, str):
        return normalize_name(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(dataset_label_names):
        raise ValueError(f"example {_example_id(example)!r} has gold label {label!r}; expected an index into "
                         f"{list(dataset_label_names)}")
    return normalize_name(dataset_label_names[label])


def _example_id(example: Any):
    return example.get("id") if isinstance(example, Mapping) else getattr(example, "id", None)


def _heuristic(example: Any) -> str:
    if isinstance(example, Mapping):
        value = example.get("heuristic", (example.get("meta") or {}).get("heuristic"))
    else:
        value = (getattr(example, "meta", None) or {}).get("heuristic")
    if value is None:
        raise ValueError(f"HANS example {_example_id(example)!r} has no heuristic field")
    return str(value)


def _check_lengths(predictions, examples) -> list:
    examples = list(examples)
    n = len(predictions) if not isinstance(predictions, torch.Tensor) else predictions.numel()
    if n != len(examples):
        raise ValueError(f"predictions ({n}) and examples ({len(examples)}) must have the same length")
    if not examples:
        raise ValueError("examples must not be empty")
    return examples


def _accuracies(groups: dict[str, list[bool]]) -> dict[str, float]:
    return {key: sum(v) / len(v) for key, v in groups.items() if v}


def hans_metrics(predictions, examples: Sequence, label_names: Sequence[str],
                 dataset_label_names: Sequence[str] = HANS_DATASET_LABELS) -> dict[str, float]:
    """HANS accuracies: accuracy, entailment, non_entailment, <heuristic>, <heuristic>/<label>.

    `label_names` are the model's output names (model_label_names); every output other than
    entailment counts as non-entailment.
    """
    examples = _check_lengths(predictions, examples)
    names = [normalize_name(n) for n in label_names]
    if "entailment" not in names:
        raise ValueError(f"label_names {list(label_names)} have no 'entailment' output; HANS needs one")
    preds = _pred_names(predictions, label_names)
    groups: dict[str, list[bool]] = defaultdict(list)
    for pred, example in zip(preds, examples):
        gold = _gold_name(example, dataset_label_names)
        if gold not in ("entailment", "non_entailment"):
            raise ValueError(f"HANS example {_example_id(example)!r} has gold label {gold!r}")
        binary = "entailment" if pred == "entailment" else "non_entailment"
        correct = binary == gold
        heuristic = _heuristic(example)
        for key in ("accuracy", gold, heuristic, f"{heuristic}/{gold}"):
            groups[key].append(correct)
    return _accuracies(groups)


def paws_metrics(predictions, examples: Sequence, label_names: Sequence[str],
                 dataset_label_names: Sequence[str] = PAWS_DATASET_LABELS) -> dict[str, float]:
    """PAWS accuracies: accuracy, duplicate, non_duplicate (paraphrase = duplicate)."""
    examples = _check_lengths(predictions, examples)
    preds = _pred_names(predictions, label_names)
    groups: dict[str, list[bool]] = defaultdict(list)
    for pred, example in zip(preds, examples):
        gold_positive = _gold_name(example, dataset_label_names) in _POSITIVE_PARAPHRASE
        correct = (pred in _POSITIVE_PARAPHRASE) == gold_positive
        for key in ("accuracy", "duplicate" if gold_positive else "non_duplicate"):
            groups[key].append(correct)
    return _accuracies(groups)


def fever_symmetric_metrics(predictions, examples: Sequence, label_names: Sequence[str],
                            dataset_label_names: Sequence[str] = FEVER_DATASET_LABELS) -> dict[str, float]:
    """FEVER-Symmetric accuracies: accuracy and per gold class (supports, refutes)."""
    examples = _check_lengths(predictions, examples)
    preds = _pred_names(predictions, label_names)
    groups: dict[str, list[bool]] = defaultdict(list)
    for pred, example in zip(preds, examples):
        gold = _gold_name(example, dataset_label_names)
        for key in ("accuracy", gold):
            groups[key].append(pred == gold)
    return _accuracies(groups)


_METRICS = {"hans": hans_metrics, "paws": paws_metrics, "fever_symmetric": fever_symmetric_metrics}


def ood_metrics(kind: str, predictions, examples: Sequence, label_names: Sequence[str], **kwargs) -> dict[str, float]:
    """Dispatch to hans_metrics / paws_metrics / fever_symmetric_metrics by `kind`."""
    key = normalize_name(kind).replace("fever_symmetric_v1", "fever_symmetric").replace("fever_symmetric_v2",
                                                                                         "fever_symmetric")
    key = {"paws_wiki": "paws", "paws_qqp": "paws"}.get(key, key)
    if key not in _METRICS:
        raise ValueError(f"OOD kind must be one of {OOD_KINDS}, got {kind!r}")
    return _METRICS[key](predictions, examples, label_names, **kwargs)


# ---- running a model --------------------------------------------------------------------------------
def _texts(example: Any) -> tuple[str, str | None]:
    if isinstance(example, Mapping):
        if "premise" in example:
            return example["premise"], example.get("hypothesis")
        return example["text_a"], example.get("text_b")
    return example.text_a, example.text_b


@torch.no_grad()
def predict_logits(model, tokenizer, examples: Sequence, *, batch_size: int = 64,
                   max_length: int = 128, desc: str | None = None) -> torch.Tensor:
    """Logits [n, num_labels] of a sequence-classification model on (premise, hypothesis) pairs.

    desc: show a progress bar with this name (None: no bar)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    examples = list(examples)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    starts = range(0, len(examples), batch_size)
    if desc is not None:
        starts = track(starts, desc=desc, unit="batch", leave=False)
    try:
        for start in starts:
            a, b = zip(*(_texts(e) for e in examples[start:start + batch_size]))
            b = None if any(t is None for t in b) else list(b)
            enc = tokenizer(list(a), b, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            chunks.append(model(**enc).logits.float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return torch.zeros(0, model.config.num_labels)
    return torch.cat(chunks)


def evaluate_ood(model, tokenizer, kind: str, examples: Sequence, *, fallback_label_names: Sequence[str] | None = None,
                 batch_size: int = 64, max_length: int = 128, **kwargs) -> dict[str, float]:
    """Run the model on an OOD set and return its metrics (label order from the model's config)."""
    names = model_label_names(model, fallback_label_names)
    preds = predict_logits(model, tokenizer, examples, batch_size=batch_size, max_length=max_length).argmax(dim=1)
    return ood_metrics(kind, preds, examples, names, **kwargs)


# ---- writing files ------------------------------------------------------------------------------------
def write_text_atomic(path: str, text: str) -> None:
    """Write text to `path` through a temporary file in the same folder and os.replace."""
    _write_text_atomic(path, text)
