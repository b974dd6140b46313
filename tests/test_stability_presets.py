"""Stability presets equal the reference configurations; warmup truncation; --list-presets / --show-preset.

Expected values are those of uds-lsv/bert-stable-fine-tuning @3cf27e8, examples/bert_stable_fine_tuning/
("REF"); yaml line numbers are the same in every configs/<task>/pooler-*.yaml file.
"""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from maskedbert.errors import UsageError
from maskedbert.experiments.stability import presets as stability_presets
from maskedbert.experiments.stability import cells as stability
from maskedbert.train import TrainConfig, Trainer
from maskedbert.train.schedules import resolve_warmup_steps
from maskedbert.experiments.stability import command as stability_command

# Shared by every REF config: :30 max_seq_length, :48 batch, :60 warmup-linear, :61 warmup 0.1,
# :63 eps 1e-6, :64 beta1 0.9, :73 eval batch 100; :51 evaluates 3x per epoch.
REF_COMMON = dict(max_length=128, batch_size=16, schedule="linear", warmup_ratio=0.1, adam_eps=1e-6, adam_beta1=0.9,
                  eval_batch_size=100, evals_per_epoch=3, warmup_rounding="floor",
                  # REF run_finetuning.py:250-260 evaluates before training, :601-608 after every epoch;
                  # :307-310 sends no token_type_ids to the configs' pooler-* models (:24): all-zero segments;
                  # pooling_roberta.py:52-57 with :36 pooler_dropout false: no dropout before the pooler's dense
                  eval_at_start=True, eval_at_epoch_end=True, segment_ids="none", pooler_head=True)
# Per model: :62 weight decay, :65 beta2, :66 max_grad_norm (-1: none), :39-41 dropout, from
# configs/rte/pooler-{bert-large-uncased,roberta-large,albert-large-v2}_bsz_16_lr_2e-05_adamW_bias-correct.yaml
REF_MODEL = {
    "bert": dict(model="bert-large-uncased", weight_decay=0.01, adam_beta2=0.999, max_grad_norm=1.0, dropout=0.1),
    "roberta": dict(model="roberta-large", weight_decay=0.1, adam_beta2=0.98, max_grad_norm=None, dropout=0.1),
    "albert": dict(model="albert-large-v2", weight_decay=0.0, adam_beta2=0.999, max_grad_norm=1.0, dropout=0.0),
}
# :54 of configs/<task>/pooler-bert-large-uncased_*_early-stopping_20.yaml
REF_SELECTION = {"rte": "accuracy", "mrpc": "acc_and_f1", "cola": "mcc"}
HF_CONFIGS = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
              "albert": transformers.AlbertConfig}
HF_MODELS = {"bert": transformers.BertForSequenceClassification,
             "roberta": transformers.RobertaForSequenceClassification,
             "albert": transformers.AlbertForSequenceClassification}


def _resolved(name):
    return json.loads(stability_presets.show_preset(name))["resolved"]


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
@pytest.mark.parametrize("task", ["rte", "mrpc", "cola"])
def test_mosbach_preset_equals_the_reference_configuration(family, task):
    ref = REF_MODEL[family]
    (run,) = _resolved(f"mosbach-{task}-{family}").values()
    expected = dict(REF_COMMON, model=ref["model"], task=task, weight_decay=ref["weight_decay"],
                    adam_beta2=ref["adam_beta2"], max_grad_norm=ref["max_grad_norm"],
                    num_epochs=20.0, lr=2e-5, correct_bias=True,  # :45, :59, :58 of *_early-stopping_20.yaml
                    selection_metric=REF_SELECTION[task])
    assert {k: run[k] for k in expected} == expected
    # dropout :39-41 under the Hugging Face config's own field names
    overrides = run["config_overrides"]
    assert set(overrides.values()) == {ref["dropout"]} and len(overrides) == 3
    hf_fields = HF_CONFIGS[family]().to_dict()
    assert set(overrides) <= set(hf_fields), f"not {family} config fields: {set(overrides) - set(hf_fields)}"
    config = HF_CONFIGS[family](hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                                vocab_size=50, **overrides)
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == ref["dropout"]
    head = HF_MODELS[family](config)
    classifier_dropout = head.classifier.dropout if family == "roberta" else head.dropout
    assert classifier_dropout.p == ref["dropout"]  # the head really uses the override


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_bert_recipe_preset_equals_the_reference_configuration(family):
    ref = REF_MODEL[family]
    runs = _resolved(f"bert-recipe-rte-{family}")
    assert sorted(r["lr"] for r in runs.values()) == [1e-5, 2e-5, 3e-5]  # REF :59's comment
    for run in runs.values():
        expected = dict(REF_COMMON, model=ref["model"], weight_decay=ref["weight_decay"], adam_beta2=ref["adam_beta2"],
                        max_grad_norm=ref["max_grad_norm"], num_epochs=3.0, correct_bias=False)  # *_adamW.yaml :45 :58
        assert {k: run[k] for k in expected} == expected


def test_descriptions_say_where_settings_were_combined():
    assert "as the reference configuration" in stability.PRESETS["mosbach-rte-bert"]["description"]
    for name in ("mosbach-rte-roberta", "mosbach-rte-albert", "mosbach-mrpc-roberta", "bert-recipe-cola-albert"):
        assert "combined with this recipe" in stability.PRESETS[name]["description"], name
    assert "combined" not in stability.PRESETS["bert-recipe-rte-roberta"]["description"]


def test_offline_presets_keep_their_measured_settings():
    minilm = stability.resolve_study("synthetic-minilm")
    assert minilm["base"]["warmup_rounding"] == "ceil" and minilm["base"]["weight_decay"] == 0.01
    assert sorted(minilm["configurations"]) == ["bias-correction", "no-bias-correction"]
    assert stability.resolve_study("tiny")["base"]["model"] == "tiny-bert"


def test_warmup_truncates_as_the_reference():
    # REF run_finetuning.py:161 warmup = int(t_total * 0.1); RTE: 2490 examples / 16 = 156 batches x 3 epochs
    assert resolve_warmup_steps(468, warmup_ratio=0.1) == 46
    assert resolve_warmup_steps(468, warmup_ratio=0.1, warmup_rounding="ceil") == 47
    assert resolve_warmup_steps(470, warmup_ratio=0.1, warmup_rounding="ceil") == 47  # float error kept as before
    assert resolve_warmup_steps(10, warmup_steps=3, warmup_rounding="ceil") == 3  # absolute counts untouched
    with pytest.raises(UsageError, match="warmup_rounding.*'nearest'"):
        resolve_warmup_steps(10, warmup_ratio=0.1, warmup_rounding="nearest")


@pytest.mark.parametrize("rounding,expected", [(None, 46), ("floor", 46), ("ceil", 47)])
def test_trainer_warmup_on_rte_sized_data(tmp_path, rounding, expected):
    kwargs = {} if rounding is None else {"warmup_rounding": rounding}
    config = TrainConfig(output_dir=str(tmp_path), num_epochs=3, batch_size=16, warmup_ratio=0.1, progress=False,
                         **kwargs)
    trainer = Trainer(torch.nn.Linear(2, 2), config, list(range(2490)), collate_fn=lambda items: items)
    assert (trainer.updates_per_epoch, trainer.total_steps) == (156, 468)
    assert trainer.scheduler.lr_lambdas[0].warmup_steps == expected


def test_show_preset_prints_the_resolved_settings(capsys):
    assert stability_command.main(["--show-preset", "mosbach-rte-roberta"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["preset"] == "mosbach-rte-roberta" and len(shown["seeds"]) == 25
    run = shown["resolved"]["mosbach"]
    assert (run["adam_beta2"], run["weight_decay"], run["max_grad_norm"], run["num_epochs"]) == (0.98, 0.1, None, 20.0)
    assert "seed" not in run and "output_dir" not in run
    with pytest.raises(SystemExit) as exc:
        stability_command.main(["--show-preset", "mosbach-rte-gpt"])
    assert exc.value.code == 2 and "mosbach-rte-bert" in capsys.readouterr().err


def test_list_presets_is_a_table_of_hyperparameters(capsys):
    assert stability_command.main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0].split()
    for column in ("preset", "epochs", "lr", "wd", "beta2", "clip", "dropout", "select", "seeds"):
        assert column in header, column
    rows = {line.split()[0]: line.split() for line in lines[2:] if line and not line.startswith(" ")}
    assert set(stability.PRESETS) <= set(rows)
    roberta = rows["mosbach-mrpc-roberta"]
    assert roberta[1:4] == ["roberta-large", "mrpc", "20"] and "0.98" in roberta and "none" in roberta
    assert "acc_and_f1" in roberta and roberta[-1] == "1-25"
    assert "1e-05/2e-05/3e-05" in rows["bert-recipe-rte-bert"]
    assert "mosbach-rte-albert: Mosbach et al." in out  # the descriptions follow the table


def test_unknown_preset_and_configuration_are_usage_errors():
    with pytest.raises(UsageError, match="--preset.*'nope'"):
        stability.resolve_study("nope")
    with pytest.raises(UsageError, match="--configurations"):
        stability.resolve_study("tiny", configurations=["default", "other"])


def test_bad_choices_are_refused_before_a_study_starts():
    with pytest.raises(UsageError, match="warmup_rounding.*'round'"):
        stability.resolve_study("tiny", overrides={"warmup_rounding": "round"})
    with pytest.raises(UsageError, match="selection_metric.*'mcc'.*accuracy"):
        stability.resolve_study("tiny", overrides={"selection_metric": "mcc"})
    assert stability.resolve_study("mosbach-mrpc-bert", overrides={"selection_metric": "f1"})


def test_a_run_with_the_reference_evaluation_points_segments_and_head(tmp_path):
    from maskedbert.experiments.finetune import FinetuneConfig, run_finetune
    from maskedbert.train.runlog import read_jsonl

    config = FinetuneConfig(model="tiny-roberta", task="synthetic-pair", output_dir=str(tmp_path), train_limit=40,
                            dev_limit=16, num_epochs=2, batch_size=16, evals_per_epoch=1.5, eval_at_start=True,
                            eval_at_epoch_end=True, segment_ids="none", pooler_head=True, progress=False, log_every=1)
    result = run_finetune(config)
    evals = [r["step"] for r in read_jsonl(str(tmp_path / "log.jsonl")) if r["type"] == "eval"]
    assert evals == [0, 2, 3, 4, 6]  # step 0, every floor(3 / 1.5) = 2 steps, and each epoch's end (3 updates)
    assert result["best_step"] is not None and result["steps"] == 6
    with pytest.raises(UsageError, match="segment_ids"):
        stability_presets.resolve_study("mosbach-rte-bert", overrides={"segment_ids": "zeros"})
