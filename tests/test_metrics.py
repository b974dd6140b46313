"""Metrics on inputs with known answers, majority baselines and the label-mapping helper."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskedbert import metrics


def test_accuracy_and_f1_by_hand():
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metrics.accuracy(preds, labels) == pytest.approx(3 / 5)
    # tp=2, fp=1, fn=1 -> F1 = 4/6
    assert metrics.f1(preds, labels) == pytest.approx(2 / 3)
    assert metrics.acc_and_f1(preds, labels) == pytest.approx((3 / 5 + 2 / 3) / 2)
    assert metrics.f1([0, 0], [0, 0]) == 0.0


def test_matthews_binary_formula_and_edge_cases():
    preds, labels = np.array([1, 1, 0, 0, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 0, 0])
    tp, tn, fp, fn = 2, 2, 2, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(expected)
    assert metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant predictor
    assert metrics.matthews_corrcoef([0, 1, 2, 0], [0, 1, 2, 0]) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([1, 0], [0, 1]) == pytest.approx(-1.0)


def test_pearson_spearman_known_values():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert metrics.pearson(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)
    assert metrics.spearman(x, [v**3 for v in x]) == pytest.approx(1.0)
    assert metrics.pearson(x, [v**3 for v in x]) < 1.0
    # ties get average ranks: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]
    expected = np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)
    assert metrics.pearson_and_spearman(torch.tensor(x), torch.tensor(x[::-1])) == pytest.approx(-1.0)


def test_compute_metrics_and_errors():
    assert metrics.compute_metrics(["accuracy", "mcc"], [1, 0], [1, 0]) == {"accuracy": 1.0, "mcc": 1.0}
    with pytest.raises(ValueError, match="metric_names"):
        metrics.compute_metrics(["bleu"], [1], [1])
    with pytest.raises(ValueError, match="same length"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="one-dimensional"):
        metrics.accuracy([[1]], [[1]])


def test_majority_baseline():
    train, dev = [1, 1, 0], [1, 0, 0, 0]
    assert metrics.majority_baseline("accuracy", train, dev) == pytest.approx(0.25)
    assert metrics.majority_baseline("f1", train, dev) == pytest.approx(2 * 1 / (2 + 3))
    assert metrics.majority_baseline("mcc", train, dev) == 0.0
    assert metrics.majority_baseline("pearson_and_spearman", [0.5], [1.0, 2.0]) == 0.0


def test_label_mapping_roberta_mnli_head():
    roberta_mnli = {"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2}
    assert metrics.label_mapping(["entailment", "neutral", "contradiction"], roberta_mnli) == [2, 1, 0]
    assert metrics.label_mapping(["entailment", "not_entailment"], {"LABEL_0": 0, "LABEL_1": 1}) == [0, 1]
    assert metrics.label_mapping(["entailment", "not_entailment"], {"non-entailment": 0, "entailment": 1}) == [1, 0]
    with pytest.raises(ValueError, match="no entry"):
        metrics.label_mapping(["entailment", "neutral"], {"yes": 0, "no": 1})


def test_best_step_rule_settles_ties_as_asked():
    from maskedbert.metrics import is_new_best

    assert is_new_best(0.5, None, ties="earlier") and is_new_best(0.5, None, ties="later")
    assert not is_new_best(0.5, 0.5, ties="earlier") and is_new_best(0.5, 0.5, ties="later")
    assert is_new_best(0.6, 0.5, ties="earlier") and not is_new_best(0.4, 0.5, ties="later")
    assert is_new_best(0.4, 0.5, ties="earlier", greater_is_better=False)
    assert not is_new_best(float("nan"), 0.5, ties="later")
    with pytest.raises(ValueError, match="ties must be one of"):
        is_new_best(0.5, 0.4, ties="first")
