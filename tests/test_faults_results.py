"""Honest results: a diverged run has no final metric and stays out of the study's statistics."""
from __future__ import annotations

import pytest

from maskedbert.experiments.finetune import FinetuneConfig, run_finetune
from maskedbert.experiments.stability.cells import summarize


def test_a_diverged_run_has_no_final_metric(tmp_path, capsys):
    result = run_finetune(FinetuneConfig(output_dir=str(tmp_path), lr=1e8, max_steps=40, train_limit=32, dev_limit=16,
                                         batch_size=8, eval_every=2, progress=False))
    assert result["diverged"] and result["failed"]
    assert result["final_metric"] is None and result["final_metrics"] == {}
    assert result["best_metric"] is None and result["best_step"] is None
    assert "non-finite" in capsys.readouterr().err


def _run(seed, final, diverged=False):
    return {"configuration": "c", "seed": seed, "metric": "accuracy", "majority_baseline": 0.5,
            "final_metric": final, "best_metric": None if diverged else final,
            "best_metrics": None if diverged else {"accuracy": final}, "diverged": diverged,
            "failed": diverged or final <= 0.5, "steps": 10, "best_step": None if diverged else 10}


def test_diverged_runs_count_as_failed_and_diverged_and_stay_out_of_mean_and_std():
    [row] = summarize([_run(1, 0.75), _run(2, 0.25 + 0.5), _run(3, None, diverged=True)])
    assert row["runs"] == 3 and row["failed"] == 1 and row["diverged"] == 1
    assert row["final_mean"] == pytest.approx(0.75) and row["final_std"] == 0.0
    [only_diverged] = summarize([_run(1, None, diverged=True), _run(2, None, diverged=True)])
    assert only_diverged["final_mean"] is None and only_diverged["final_std"] is None
    assert only_diverged["failed"] == 2 and only_diverged["diverged"] == 2


def test_a_model_folder_without_a_tokenizer_is_refused_unless_one_is_named(tmp_path):
    from maskedbert.errors import UsageError
    from maskedbert.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("tiny-bert", 2)
    model.save_pretrained(tmp_path / "model")  # weights and config only
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(UsageError, match="has no tokenizer .*--tokenizer"):
        load_model_and_tokenizer(str(tmp_path / "model"), 2)
    _, named = load_model_and_tokenizer(str(tmp_path / "model"), 2, tokenizer=str(tmp_path / "tokenizer"))
    assert named("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]
    assert named.unk_token_id not in named("the cat")["input_ids"]
