"""`maskedbert stability` end to end on a tiny random model: tables, plots, failed-run rate, resume."""
from __future__ import annotations

import csv
import json
import os
import random

import pytest

from maskedbert.data import Example, TaskSpec, register_task
from maskedbert.experiments import stability

WORDS = ("red", "blue", "green", "cat", "dog", "box")
# "learns": the tiny model finds the rule within ~40 steps; "stuck": lr 0 keeps the random head (one epoch)
CONFIGURATIONS = {"learns": {"lr": 3e-3}, "stuck": {"lr": 0.0, "num_epochs": 1.0}}


def _easy_pair(split, seed=0):
    """Learnable in a few dozen steps: entailment iff the second sentence is "yes"."""
    rng = random.Random(f"{split}-{seed}")
    size = {"train": 160, "validation": 48}[split]
    examples = []
    for i in range(size):
        label = rng.randrange(2)
        examples.append(Example(f"easy-{split}-{i}", " ".join(rng.choices(WORDS, k=3)),
                                "yes" if label == 0 else "no", label))
    return examples


_easy_pair.vocabulary = lambda: list(WORDS) + ["yes", "no"]


@pytest.fixture(autouse=True)
def easy_task():
    register_task(TaskSpec(name="easy-pair", label_names=("entailment", "not_entailment"), metric="accuracy",
                           metrics=("accuracy",), generator=_easy_pair), overwrite=True)


def test_stability_end_to_end_and_resume(tmp_path, capsys):
    out = str(tmp_path / "study")
    argv = ["--preset", "tiny", "--out", out, "--seeds", "1,2", "--no-progress", "--set", "task='easy-pair'",
            "--set", "num_epochs=6", "--set", "max_length=8", "--set", "dev_limit=None",
            "--set", "evals_per_epoch=1", "--set", "log_every=4"]
    stability.PRESETS["tiny"]["configurations"] = CONFIGURATIONS
    try:
        assert stability.main(argv) == 0
    finally:
        stability.PRESETS["tiny"]["configurations"] = {"default": {}}
    for name in ("study_config.json", "runs.csv", "summary.csv", "results.md", "metric_distribution.png",
                 "grad_norms.png", "loss_vs_metric.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "summary.csv")) as f:
        summary = {row["configuration"]: row for row in csv.DictReader(f)}
    for name in ("learns", "stuck"):
        results = []
        for seed in (1, 2):
            with open(os.path.join(out, name, f"seed_{seed}", "result.json")) as f:
                results.append(json.load(f))
        failed = [r["final_metric"] <= r["majority_baseline"] for r in results]
        assert [r["failed"] for r in results] == failed
        assert float(summary[name]["failed_rate"]) == pytest.approx(sum(failed) / 2)
        finals = [r["final_metric"] for r in results]
        assert float(summary[name]["final_mean"]) == pytest.approx(sum(finals) / 2)
        assert float(summary[name]["final_max"]) == pytest.approx(max(finals))
    assert float(summary["learns"]["failed_rate"]) == 0.0 and float(summary["learns"]["final_min"]) > 0.9

    with open(os.path.join(out, "study_config.json")) as f:
        study = json.load(f)
    assert study["base"]["task"] == "easy-pair" and study["seeds"] == [1, 2]
    # rerun: the finished seeds are read back, not trained again
    capsys.readouterr()
    stability.PRESETS["tiny"]["configurations"] = CONFIGURATIONS
    try:
        assert stability.main(argv) == 0
    finally:
        stability.PRESETS["tiny"]["configurations"] = {"default": {}}
    assert capsys.readouterr().out.count("not rerun") == 4


def test_presets_hold_the_published_settings():
    bert = stability.resolve_study("bert-recipe-rte-bert")
    assert bert["base"]["model"] == "bert-large-uncased" and bert["base"]["correct_bias"] is False
    assert (bert["base"]["num_epochs"], bert["base"]["batch_size"], bert["base"]["weight_decay"]) == (3.0, 16, 0.01)
    assert sorted(c["lr"] for c in bert["configurations"].values()) == [1e-5, 2e-5, 3e-5]
    mosbach = stability.resolve_study("mosbach-cola-albert")
    assert mosbach["base"]["model"] == "albert-large-v2" and mosbach["base"]["correct_bias"] is True
    assert (mosbach["base"]["num_epochs"], mosbach["base"]["lr"], mosbach["base"]["warmup_ratio"]) == (20.0, 2e-5, 0.1)
    assert mosbach["base"]["evals_per_epoch"] == 3 and len(mosbach["seeds"]) == 25
    assert stability.resolve_study("mosbach-mrpc-roberta")["base"]["model"] == "roberta-large"


def test_bad_arguments(tmp_path, capsys):
    assert stability.main(["--preset", "nope", "--out", str(tmp_path)]) == 2
    assert stability.main(["--preset", "tiny", "--set", "no_such_field=1", "--out", str(tmp_path)]) == 2
    assert "unknown finetune settings" in capsys.readouterr().err
    assert stability.main(["--list-presets"]) == 0
