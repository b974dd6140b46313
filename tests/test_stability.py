"""`maskedbert stability` end to end on a tiny random model: tables, plots, failed-run rate, resume."""
from __future__ import annotations

import csv
import json
import os
import random

import pytest

from maskedbert.data import Example, TaskSpec, register_task
from maskedbert.errors import UsageError
from maskedbert.experiments.stability import cells as stability
from maskedbert.experiments.finetune import FinetuneConfig, run_finetune
from maskedbert.train.runlog import read_jsonl
from maskedbert.experiments.stability import command as stability_command

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


@pytest.mark.slow
def test_stability_end_to_end_and_resume(tmp_path, capsys):
    out = str(tmp_path / "study")
    argv = ["--preset", "tiny", "--out", out, "--seeds", "1,2", "--no-progress", "--set", "task='easy-pair'",
            "--set", "num_epochs=6", "--set", "max_length=8", "--set", "dev_limit=None",
            "--set", "evals_per_epoch=1", "--set", "log_every=4"]
    stability.PRESETS["tiny"]["configurations"] = CONFIGURATIONS
    try:
        assert stability_command.main(argv) == 0
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
    _check_last_and_best_columns(out)

    with open(os.path.join(out, "study_config.json")) as f:
        study = json.load(f)
    assert study["base"]["task"] == "easy-pair" and study["seeds"] == [1, 2]
    # rerun: the finished seeds are read back, not trained again
    capsys.readouterr()
    stability.PRESETS["tiny"]["configurations"] = CONFIGURATIONS
    try:
        assert stability_command.main(argv) == 0
    finally:
        stability.PRESETS["tiny"]["configurations"] = {"default": {}}
    assert capsys.readouterr().out.count("not rerun") == 4


def _check_last_and_best_columns(out):
    """runs.csv's last-model and best-checkpoint columns against each run's own evaluation log."""
    with open(os.path.join(out, "runs.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        log = read_jsonl(os.path.join(out, row["configuration"], f"seed_{row['seed']}", "log.jsonl"))
        evals = [(r["step"], r["accuracy"]) for r in log if r.get("type") == "eval"]
        assert len(evals) >= (2 if row["configuration"] == "learns" else 1)
        best_step, best_value = evals[0]
        for step, value in evals[1:]:  # highest value; ties keep the earlier step
            if value > best_value:
                best_step, best_value = step, value
        assert float(row["final_metric"]) == pytest.approx(evals[-1][1])
        assert int(row["best_step"]) == best_step and row["selection_metric"] == "accuracy"
        assert float(row["best_checkpoint_metric"]) == pytest.approx(best_value)
        assert float(row["best_selection"]) == pytest.approx(best_value)
        baseline = float(row["majority_baseline"])
        assert row["failed"] == str(evals[-1][1] <= baseline) and row["best_failed"] == str(best_value <= baseline)
    # "learns" reaches its final accuracy before the end: the tie keeps the earlier checkpoint
    learns = [row for row in rows if row["configuration"] == "learns"]
    assert any(int(row["best_step"]) < int(row["steps"]) for row in learns)
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    assert "**Last model**" in text and "**Best checkpoint**" in text and "best_checkpoint_metric" in text


def _result(configuration, final, best_selection, at_best, baseline=0.5, **extra):
    return {"configuration": configuration, "metric": "f1", "selection_metric": "acc_and_f1", "final_metric": final,
            "best_metric": best_selection, "best_step": 10, "best_metrics": {"f1": at_best, "acc_and_f1": best_selection},
            "majority_baseline": baseline, "failed": final <= baseline, "diverged": False, **extra}


def test_summary_reports_the_last_model_and_the_best_checkpoint():
    # MRPC-like: the task's metric (f1) is reported, the checkpoint chosen by acc_and_f1
    results = [_result("a", 0.4, 0.8, 0.82), _result("a", 0.9, 0.85, 0.88), _result("a", 0.5, 0.6, 0.5)]
    (row,) = stability.summarize(results)
    assert (row["metric"], row["selection_metric"], row["runs"]) == ("f1", "acc_and_f1", 3)
    assert row["final_mean"] == pytest.approx(0.6) and (row["failed"], row["failed_rate"]) == (2, pytest.approx(2 / 3))
    assert row["best_mean"] == pytest.approx((0.82 + 0.88 + 0.5) / 3)  # f1 at the best checkpoint, not acc_and_f1
    assert (row["best_min"], row["best_max"]) == (0.5, 0.88)
    assert row["best_selection_mean"] == pytest.approx(0.75)
    assert row["best_failed"] == 1 and row["best_failed_rate"] == pytest.approx(1 / 3)
    runs = stability.run_rows(results)
    assert [r["best_checkpoint_metric"] for r in runs] == [0.82, 0.88, 0.5]
    assert [r["best_failed"] for r in runs] == [False, False, True]


def test_results_written_before_selection_metric_existed_still_summarize():
    old = {"configuration": "a", "metric": "accuracy", "final_metric": 0.7, "best_metric": 0.75, "best_step": 4,
           "majority_baseline": 0.5, "failed": False}
    (run,) = stability.run_rows([old])
    assert (run["selection_metric"], run["best_checkpoint_metric"], run["best_failed"]) == ("accuracy", 0.75, False)
    diverged = dict(old, diverged=True, failed=True, best_metric=None, best_step=None, best_metrics=None)
    (row,) = stability.summarize([diverged])
    assert (row["best_mean"], row["best_failed"], row["diverged"]) == (None, 1, 1)


def test_selection_metric_picks_the_checkpoint_and_the_task_metric_is_reported(tmp_path, one_torch_thread):
    register_task(TaskSpec(name="easy-pair-f1", label_names=("entailment", "not_entailment"), metric="f1",
                           metrics=("accuracy", "f1"), generator=_easy_pair), overwrite=True)
    config = FinetuneConfig(model="tiny-bert", task="easy-pair-f1", output_dir=str(tmp_path / "run"), seed=1,
                            max_length=8, num_epochs=2.0, lr=3e-3, evals_per_epoch=2, log_every=4, progress=False,
                            selection_metric="accuracy")
    result = run_finetune(config)
    evals = [r for r in read_jsonl(str(tmp_path / "run" / "log.jsonl")) if r.get("type") == "eval"]
    best = max(evals, key=lambda r: (r["accuracy"], -r["step"]))  # highest accuracy, earliest step on ties
    assert (result["metric"], result["selection_metric"]) == ("f1", "accuracy")
    assert result["best_step"] == best["step"] and result["best_metric"] == pytest.approx(best["accuracy"])
    assert result["best_metrics"]["f1"] == pytest.approx(best["f1"])
    assert result["final_metric"] == pytest.approx(evals[-1]["f1"])
    with pytest.raises(UsageError, match="selection_metric.*'mcc'.*accuracy"):
        run_finetune(FinetuneConfig(task="easy-pair-f1", output_dir=str(tmp_path / "bad"), selection_metric="mcc"))
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_finetune_passes_adam_betas_and_warmup_rounding_to_the_trainer(tmp_path, monkeypatch, one_torch_thread):
    import maskedbert.train.trainer as trainer_module

    seen = {}
    real_adamw, real_schedule = trainer_module.AdamW, trainer_module.build_schedule

    def spy_adamw(groups, **kwargs):
        seen["betas"] = kwargs["betas"]
        return real_adamw(groups, **kwargs)

    def spy_schedule(optimizer, name, total_steps, **kwargs):
        seen["schedule"] = dict(kwargs, total_steps=total_steps)
        return real_schedule(optimizer, name, total_steps, **kwargs)

    monkeypatch.setattr(trainer_module, "AdamW", spy_adamw)
    monkeypatch.setattr(trainer_module, "build_schedule", spy_schedule)
    run_finetune(FinetuneConfig(task="easy-pair", output_dir=str(tmp_path / "run"), max_length=8, max_steps=2,
                                adam_beta2=0.98, warmup_rounding="ceil", progress=False))
    assert seen["betas"] == (0.9, 0.98)
    assert seen["schedule"]["warmup_rounding"] == "ceil" and seen["schedule"]["warmup_ratio"] == 0.1


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
    assert stability_command.main(["--preset", "nope", "--out", str(tmp_path)]) == 2
    assert stability_command.main(["--preset", "tiny", "--set", "no_such_field=1", "--out", str(tmp_path)]) == 2
    assert "unknown finetune settings" in capsys.readouterr().err
    assert stability_command.main(["--list-presets"]) == 0


def test_report_to_reaches_every_run(tmp_path):
    pytest.importorskip("tensorboard")
    from maskedbert.experiments.stability import command as stability_command

    out = tmp_path / "study"
    argv = ["--preset", "tiny", "--seeds", "1", "--out", str(out), "--report-to", "tensorboard", "--no-progress"]
    assert stability_command.main(argv) == 0
    events = [os.path.join(root, n) for root, _, names in os.walk(out) for n in names if n.startswith("events.out")]
    assert events, "no TensorBoard event file was written"
