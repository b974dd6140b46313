"""Task metrics (accuracy, F1, Matthews, Pearson/Spearman), majority-class baselines, label mapping.

Functions take sequences, numpy arrays or tensors of predictions and labels and return floats.
GLUE's conventions: MRPC/QQP report accuracy and F1 of the positive class, CoLA Matthews
correlation, STS-B Pearson and Spearman. A fine-tuning run "fails" (Mosbach et al. 2021) when its
dev metric is at or below the majority-class baseline computed here.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy", "f1", "acc_and_f1", "matthews_corrcoef", "pearson", "spearman", "pearson_and_spearman",
    "METRIC_FUNCTIONS", "compute_metrics", "majority_baseline", "label_mapping", "normalize_label_name",
    "is_new_best", "TIE_RULES",
]

TIE_RULES = ("earlier", "later")


def is_new_best(value: float, best: float | None, *, ties: str, greater_is_better: bool = True) -> bool:
    """The best-step rule: does `value`, measured at a later step, replace `best` (None: nothing yet)?

    ties="earlier": an equal value keeps the earlier step (a strict comparison). The Trainer's best
      checkpoint uses it (maskedbert.train.trainer: fine-tuning, the stability study, srnet's dense
      models), as both reference codes do: strict `>` in sparse-and-robust-PLM's hg_transformers/trainer.py
      and in bert-stable-fine-tuning's run_finetuning.py (docs/PROTOCOLS.md, docs/reference_srnet_facts.md).
    ties="later": an equal value moves the best to the later step (at the same dev metric the later mask
      has trained longer). maskedbert.pruning.BestMaskSelector defaults to it as a library; `maskedbert
      srnet` passes its `--select-ties`, whose default is "earlier", the reference's mask_trainer.py rule
      (strict `>`), and "later" is the option (docs/PROTOCOLS.md, "mask selection").
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    if best is None:
        return True
    if value == best:
        return ties == "later"
    return value > best if greater_is_better else value < best


def _as_array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _pair(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = _as_array(preds, "preds"), _as_array(labels, "labels")
    if preds.shape != labels.shape:
        raise ValueError(f"preds and labels must have the same length, got {preds.shape[0]} and {labels.shape[0]}")
    if preds.size == 0:
        raise ValueError("preds and labels must not be empty")
    return preds, labels


def accuracy(preds, labels) -> float:
    preds, labels = _pair(preds, labels)
    return float((preds == labels).mean())


def f1(preds, labels, positive_label: int = 1) -> float:
    """F1 of the positive class; 0.0 when the positive class is neither predicted nor present."""
    preds, labels = _pair(preds, labels)
    tp = float(np.sum((preds == positive_label) & (labels == positive_label)))
    fp = float(np.sum((preds == positive_label) & (labels != positive_label)))
    fn = float(np.sum((preds != positive_label) & (labels == positive_label)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def acc_and_f1(preds, labels) -> float:
    return (accuracy(preds, labels) + f1(preds, labels)) / 2


def matthews_corrcoef(preds, labels) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K); 0.0 when undefined (a constant predictor)."""
    preds, labels = _pair(preds, labels)
    classes = np.union1d(preds, labels)
    index = {c: i for i, c in enumerate(classes.tolist())}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for t, p in zip(labels.tolist(), preds.tolist()):
        confusion[index[t], index[p]] += 1
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - float(t_sum @ p_sum)
    cov_pp = n * n - float(p_sum @ p_sum)
    cov_tt = n * n - float(t_sum @ t_sum)
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp * cov_tt))


def pearson(preds, labels) -> float:
    x, y = _pair(preds, labels)
    x, y = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denom == 0 else float((x * y).sum() / denom)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):  # ties share the mean of their ranks
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(preds, labels) -> float:
    x, y = _pair(preds, labels)
    return pearson(_average_ranks(x.astype(np.float64)), _average_ranks(y.astype(np.float64)))


def pearson_and_spearman(preds, labels) -> float:
    return (pearson(preds, labels) + spearman(preds, labels)) / 2


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "acc_and_f1": acc_and_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
    "pearson_and_spearman": pearson_and_spearman,
}


def compute_metrics(metric_names: Sequence[str], preds, labels) -> dict[str, float]:
    """{name: value} for each name in `metric_names` (keys of METRIC_FUNCTIONS)."""
    unknown = [m for m in metric_names if m not in METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"metric_names must be among {sorted(METRIC_FUNCTIONS)}, got unknown {unknown}")
    return {name: METRIC_FUNCTIONS[name](preds, labels) for name in metric_names}


def majority_baseline(metric: str, train_labels, eval_labels) -> float:
    """`metric` on `eval_labels` of always predicting the most frequent train label (ties: smallest).

    For regression metrics (pearson/spearman) a constant prediction has no correlation: 0.0.
    """
    if metric not in METRIC_FUNCTIONS:
        raise ValueError(f"metric must be one of {sorted(METRIC_FUNCTIONS)}, got {metric!r}")
    eval_labels = _as_array(eval_labels, "eval_labels")
    if metric in ("pearson", "spearman", "pearson_and_spearman"):
        return 0.0
    train_labels = _as_array(train_labels, "train_labels")
    if train_labels.size == 0:
        raise ValueError("train_labels must not be empty")
    values, counts = np.unique(train_labels, return_counts=True)
    majority = values[np.argmax(counts)]
    return METRIC_FUNCTIONS[metric](np.full(eval_labels.shape, majority), eval_labels)


_LABEL_ALIASES = {"not_entailment": "non_entailment", "nonentailment": "non_entailment"}


def normalize_label_name(name: str) -> str:
    """Lower case, spaces/dashes -> underscores, known aliases unified ("not_entailment" -> "non_entailment")."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return _LABEL_ALIASES.get(key, key)


def label_mapping(dataset_label_names: Sequence[str], label2id: Mapping[str, int] | None) -> list[int]:
    """Model output index for each dataset label index, read from a model's config.label2id.

    A RoBERTa MNLI head orders labels (contradiction, neutral, entailment) while GLUE's data is
    (entailment, neutral, contradiction): `label_mapping(["entailment", "neutral", "contradiction"],
    config.label2id)` gives [2, 1, 0]. A config with only default names ("LABEL_0", ...) or none
    keeps the dataset order.
    """
    names = list(dataset_label_names)
    if not names:
        raise ValueError("dataset_label_names must not be empty")
    if not label2id or all(re.fullmatch(r"LABEL_\d+", str(k)) for k in label2id):
        return list(range(len(names)))
    model_index = {normalize_label_name(k): int(v) for k, v in label2id.items()}
    missing = [n for n in names if normalize_label_name(n) not in model_index]
    if missing:
        raise ValueError(f"label2id {dict(label2id)} has no entry for dataset labels {missing}")
    mapping = [model_index[normalize_label_name(n)] for n in names]
    if len(set(mapping)) != len(mapping):
        raise ValueError(f"label2id maps several dataset labels {names} to the same index: {mapping}")
    return mapping
