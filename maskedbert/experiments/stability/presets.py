"""The presets of `maskedbert stability`: the paper's recipes (Mosbach et al., ICLR 2021) and offline demos.

    maskedbert stability --list-presets              # a table of each preset's key hyperparameters
    maskedbert stability --show-preset mosbach-rte-roberta   # every resolved setting, as JSON

Every value of the paper presets comes from the reference code, uds-lsv/bert-stable-fine-tuning at
commit 3cf27e8, folder examples/bert_stable_fine_tuning/ ("REF" below). Its YAML configurations
all have the same layout, so one line number names a setting in every configs/<task>/pooler-*.yaml:
:30 max_seq_length, :39-41 hidden/attention/classifier dropout, :45 num_train_epochs,
:48 batch size, :51 eval_logging_steps, :53-54 early stopping and its metric, :58 correct_bias,
:59 learning rate, :60 schedule, :61 warmup fraction, :62 weight decay, :63 Adam eps,
:64-65 Adam betas, :66 max_grad_norm, :73 eval batch size.

- "bert-recipe-<task>-<model>": BERT's original recipe, REF configs/<task>/pooler-<model>_bsz_16_lr_<lr>_adamW.yaml
  (3 epochs, Adam without bias correction), lr in {1, 2, 3}e-5 (REF :59's comment).
- "mosbach-<task>-<model>": the paper's stable baseline, REF configs/<task>/
  pooler-bert-large-uncased_bsz_16_lr_2e-05_adamW_bias-correct_early-stopping_20.yaml (20 epochs,
  bias correction, best dev checkpoint kept by the task's metric).
The per-model settings (weight decay, Adam beta2, clipping, dropout) come from REF's RoBERTa and
ALBERT configurations, which exist for RTE and 3 epochs only; their 20-epoch presets and those for
MRPC and CoLA combine these per-model settings with the recipe, as each description says.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from maskedbert.choices import SEGMENT_IDS, WARMUP_ROUNDING_NAMES
from maskedbert.data.tasks import get_task
from maskedbert.errors import UsageError

from maskedbert.experiments.finetune import FinetuneConfig
from maskedbert.experiments.tables import text_table

__all__ = ["PRESETS", "PAPER_MODELS", "PAPER_TASKS", "PAPER_SEEDS", "MODEL_SETTINGS", "SELECTION_METRICS",
           "resolve_study", "presets_table", "show_preset"]

PAPER_MODELS = {"bert": "bert-large-uncased", "roberta": "roberta-large", "albert": "albert-large-v2"}
PAPER_TASKS = ("rte", "mrpc", "cola")
_TASK_TITLES = {"rte": "RTE", "mrpc": "MRPC", "cola": "CoLA"}
PAPER_SEEDS = list(range(1, 26))  # REF scripts/run_scripts.txt:117 runs seeds 1..25 (seeds.sh <config> 1 25)

# REF :54 of the *_early-stopping_20.yaml files: rte acc, mrpc acc_and_f1, cola mcc (names in maskedbert.metrics)
SELECTION_METRICS = {"rte": "accuracy", "mrpc": "acc_and_f1", "cola": "mcc"}

# Shared by every REF configuration (lines as in the module docstring).
_REFERENCE_COMMON = dict(
    batch_size=16,            # :48
    max_length=128,           # :30
    adam_eps=1e-6,            # :63
    adam_beta1=0.9,           # :64
    schedule="linear",        # :60 warmup-linear
    warmup_ratio=0.1,         # :61, a fraction of the total steps ...
    warmup_rounding="floor",  # ... truncated: REF run_finetuning.py:161 int(t_total * warmup_steps)
    # :51 "we evaluate 3x per epoch": 52, 76, 178 steps on RTE, MRPC, CoLA = floor(steps per epoch / 3)
    evals_per_epoch=3,
    eval_at_start=True,       # REF run_finetuning.py:250-260: the untrained model is evaluated (and a best candidate)
    eval_at_epoch_end=True,   # REF run_finetuning.py:601-608: and after every epoch (:514 skips its last in-epoch step)
    # REF run_finetuning.py:307-310 sends token_type_ids only for model_type bert/xlnet/albert; the
    # configs say pooler-bert / pooler-roberta / pooler-albert (:24), so every model sees all-zero segments
    segment_ids="none",
    pooler_head=True,         # REF pooling_roberta.py:52-57 with :36 pooler_dropout false (BERT/ALBERT: already so)
    eval_batch_size=100,      # :73
)

# REF's dropout fields (:39-41) under each Hugging Face config's own names (BERT and RoBERTa call the
# classifier's `classifier_dropout`, ALBERT `classifier_dropout_prob`).
_DROPOUT_0_1 = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "classifier_dropout": 0.1}

MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    # REF configs/rte/pooler-bert-large-uncased_bsz_16_lr_2e-05_adamW_bias-correct_early-stopping_20.yaml
    "bert": dict(weight_decay=0.01,      # :62
                 adam_beta2=0.999,       # :65
                 max_grad_norm=1.0,      # :66
                 config_overrides=dict(_DROPOUT_0_1)),  # :39-41
    # REF configs/rte/pooler-roberta-large_bsz_16_lr_2e-05_adamW_bias-correct.yaml
    "roberta": dict(weight_decay=0.1,    # :62
                    adam_beta2=0.98,     # :65
                    max_grad_norm=None,  # :66 is -1: no clipping (REF run_finetuning.py:374 clips only if > 0)
                    config_overrides=dict(_DROPOUT_0_1)),  # :39-41
    # REF configs/rte/pooler-albert-large-v2_bsz_16_lr_2e-05_adamW_bias-correct.yaml
    "albert": dict(weight_decay=0.0,     # :62
                   adam_beta2=0.999,     # :65
                   max_grad_norm=1.0,    # :66
                   config_overrides={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                                     "classifier_dropout_prob": 0.0}),  # :39-41
}

_RECIPE_LRS = (1e-5, 2e-5, 3e-5)  # REF :59 "select from {1e-5, 2e-5, 3e-5}"


def _source_note(task: str, key: str, epochs: int) -> str:
    """Where a paper preset's settings come from, for its description."""
    if key == "bert":
        return "as the reference configuration"
    where = f"configs/rte/pooler-{PAPER_MODELS[key]}_*"
    gaps = [] if task == "rte" else [_TASK_TITLES[task]]
    if epochs != 3:
        gaps.append(f"{epochs} epochs")
    if not gaps:
        return f"as the reference configuration ({where})"
    return (f"the reference has no {PAPER_MODELS[key]} configuration for {' and '.join(gaps)}: its per-model "
            f"settings ({where}) combined with this recipe")


def _paper_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for task in PAPER_TASKS:
        for key, model in PAPER_MODELS.items():
            common = dict(_REFERENCE_COMMON, **copy.deepcopy(MODEL_SETTINGS[key]), model=model, task=task,
                          selection_metric=SELECTION_METRICS[task])
            presets[f"bert-recipe-{task}-{key}"] = {
                "description": f"BERT's original recipe (Devlin et al.) on {_TASK_TITLES[task]} with {model}: 3 epochs, "
                               f"Adam without bias correction, lr 1e-5/2e-5/3e-5; {_source_note(task, key, 3)}",
                "base": dict(common, num_epochs=3.0,     # :45 of *_adamW.yaml
                             correct_bias=False),        # :58 of *_adamW.yaml
                "configurations": {f"lr{lr:g}": {"lr": lr} for lr in _RECIPE_LRS},
                "seeds": PAPER_SEEDS,
            }
            presets[f"mosbach-{task}-{key}"] = {
                "description": f"Mosbach et al.'s stable baseline on {_TASK_TITLES[task]} with {model}: 20 epochs, "
                               f"bias correction, lr 2e-5, best dev checkpoint by {SELECTION_METRICS[task]}; "
                               f"{_source_note(task, key, 20)}",
                "base": dict(common, num_epochs=20.0,    # :45 of *_early-stopping_20.yaml
                             lr=2e-5,                    # :59
                             correct_bias=True),         # :58
                "configurations": {"mosbach": {}},
                "seeds": PAPER_SEEDS,
            }
    presets.update(_offline_presets())
    return presets


def _offline_presets() -> dict[str, dict[str, Any]]:
    # warmup_rounding="ceil": the rounding these presets were measured with (their comments quote results)
    return {
        "synthetic-minilm": {
            "description": "offline CPU demo (~2 min): pretrained MiniLM on the synthetic NLI task, "
                           "Adam with vs without bias correction",
            # 256 examples x 2 epochs = 32 steps per run, 6 runs: ~2 minutes on this 2-core CPU when idle.
            # synthetic-nli, not synthetic-pair: MiniLM learns it within 32 steps (0.93 dev accuracy, seed 0),
            # while synthetic-pair needs ~150+ steps to leave the majority class (see synthetic-pair-minilm)
            "base": dict(model="offline-minilm", task="synthetic-nli", train_limit=256, dev_limit=200, max_length=40,
                         num_epochs=2.0, lr=1e-4, batch_size=16, adam_eps=1e-6, weight_decay=0.01,
                         warmup_ratio=0.1, warmup_rounding="ceil", max_grad_norm=1.0, evals_per_epoch=1,
                         log_every=2),
            "configurations": {"bias-correction": {"correct_bias": True},
                               "no-bias-correction": {"correct_bias": False}},
            "seeds": [1, 2, 3],
        },
        "synthetic-pair-minilm": {
            "description": "offline CPU (16 min measured on a 2-core CPU, 2026-11): pretrained MiniLM on the RTE-sized synthetic pair task, which "
                           "is slow to start; short training without bias correction vs Mosbach et al.'s "
                           "longer training with bias correction",
            # MiniLM sat at the majority class for ~150 steps at lr 5e-5, batch 32 (synthetic.py docstring):
            # 3 epochs of 1024 examples (96 steps) vs 10 epochs (320 steps) straddle that. Measured
            # 2026-11-23 (CPU, 16 min): short/no correction failed 3/3 (majority class, gradient norms of
            # every layer falling to ~1e-3..1e-2); long/with correction 0/3 failed, accuracy 0.746 +- 0.018.
            # The two configurations change length and bias correction together, as the paper's recipe does.
            "base": dict(model="offline-minilm", task="synthetic-pair", train_limit=1024, max_length=48,
                         lr=5e-5, batch_size=32, adam_eps=1e-6, weight_decay=0.01, warmup_ratio=0.1,
                         warmup_rounding="ceil", max_grad_norm=1.0, evals_per_epoch=1, log_every=4),
            "configurations": {"short-no-bias-correction": {"num_epochs": 3.0, "correct_bias": False},
                               "long-bias-correction": {"num_epochs": 10.0, "correct_bias": True}},
            "seeds": [1, 2, 3],
        },
        "tiny": {
            "description": "seconds: random tiny BERT on a slice of the synthetic pair task (tests, smoke runs)",
            "base": dict(model="tiny-bert", task="synthetic-pair", train_limit=128, dev_limit=64, max_length=32,
                         num_epochs=2.0, lr=1e-3, batch_size=16, warmup_ratio=0.1, warmup_rounding="ceil",
                         evals_per_epoch=2, log_every=2),
            "configurations": {"default": {}},
            "seeds": [1, 2, 3],
        },
    }


PRESETS = _paper_presets()


def resolve_study(preset: str, *, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None,
                  configurations: list[str] | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """The full study settings: preset + overrides (applied to every configuration)."""
    if preset not in PRESETS:
        raise UsageError(f"--preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)} "
                         f"(see --list-presets)")
    study = copy.deepcopy(PRESETS[preset])
    study["preset"] = preset
    study["base"].update(overrides or {})
    if data_dir is not None:
        study["base"]["data_dir"] = data_dir
    if seeds is not None:
        study["seeds"] = list(seeds)
    if configurations:
        unknown = sorted(set(configurations) - set(study["configurations"]))
        if unknown:
            raise UsageError(f"--configurations: {unknown} not in preset {preset!r}; "
                             f"choose from {sorted(study['configurations'])}")
        study["configurations"] = {k: v for k, v in study["configurations"].items() if k in configurations}
    for name, extra in study["configurations"].items():  # fail now on bad settings, not mid-study
        values = {**study["base"], **extra}
        FinetuneConfig.from_dict(values)
        _check_choices(values)
    return study


def _check_choices(values: dict[str, Any]) -> None:
    """Settings whose bad values would otherwise surface only when a run starts (after files are written)."""
    rounding = values.get("warmup_rounding", "floor")
    if rounding not in WARMUP_ROUNDING_NAMES:
        raise UsageError(f"--set warmup_rounding: got {rounding!r}; choose one of {sorted(WARMUP_ROUNDING_NAMES)}")
    segments = values.get("segment_ids", "tokenizer")
    if segments not in SEGMENT_IDS:
        raise UsageError(f"--set segment_ids: got {segments!r}; choose one of {list(SEGMENT_IDS)} "
                         f"(none: all-zero segment ids, as the reference)")
    selection = values.get("selection_metric")
    if selection is None:
        return
    try:
        spec = get_task(values.get("task", FinetuneConfig.task))
    except (KeyError, ValueError):  # an unknown task is reported by the run, with the task list
        return
    if selection not in spec.metrics:
        raise UsageError(f"--set selection_metric: got {selection!r}; task {spec.name!r} reports {list(spec.metrics)}")


def _resolved_runs(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every FinetuneConfig field of each configuration (defaults included), without the per-run ones."""
    per_run = ("seed", "output_dir", "progress")
    runs = {}
    for name, extra in study["configurations"].items():
        values = dataclasses.asdict(FinetuneConfig.from_dict({**study["base"], **extra}))
        runs[name] = {k: v for k, v in values.items() if k not in per_run}
    return runs


def show_preset(name: str) -> str:
    """The resolved settings of preset `name` as JSON: the preset, and every setting each configuration runs with."""
    study = resolve_study(name)
    return json.dumps({**study, "resolved": _resolved_runs(study)}, indent=2)


def _joined(values: list[Any], fmt=lambda v: f"{v:g}" if isinstance(v, float) else str(v)) -> str:
    return "/".join(dict.fromkeys(fmt(v) for v in values))


def _dropout_text(overrides: dict[str, Any] | None) -> str:
    rates = [v for k, v in (overrides or {}).items() if "dropout" in k]
    return _joined(rates) if rates else "model's"


def _seeds_text(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ",".join(map(str, seeds))


_TABLE_COLUMNS = ("preset", "model", "task", "epochs", "lr", "batch", "warmup", "wd", "beta2", "clip", "dropout",
                  "bias corr.", "evals/ep", "select", "seeds")


def _table_row(name: str, preset: dict[str, Any]) -> list[str]:
    runs = list(_resolved_runs({**preset, "preset": name}).values())

    def col(key, fmt=None):
        values = [r[key] for r in runs]
        return _joined(values, fmt) if fmt else _joined(values)

    return [name, col("model"), col("task"), col("num_epochs"), col("lr"), col("batch_size"),
            col("warmup_ratio", lambda v: "none" if not v else f"{v:g}")
            + " " + col("warmup_rounding"),
            col("weight_decay"), col("adam_beta2"), col("max_grad_norm", lambda v: "none" if v is None else f"{v:g}"),
            _joined([_dropout_text(r["config_overrides"]) for r in runs], str),
            col("correct_bias", lambda v: "yes" if v else "no"),
            col("evals_per_epoch", lambda v: "end" if not v else f"{v:g}"),
            _joined([r["selection_metric"] or "task" for r in runs], str), _seeds_text(preset["seeds"])]


def presets_table() -> str:
    """Each preset's key hyperparameters, one row per preset, then each preset's description."""
    lines = [text_table(_TABLE_COLUMNS, [_table_row(name, preset) for name, preset in PRESETS.items()])]
    lines += ["", "wd: weight decay; clip: max gradient norm; warmup: fraction of steps and its rounding; "
              "select: dev metric of the best checkpoint ('task': the task's metric).",
              "Every setting: maskedbert stability --show-preset NAME", ""]
    lines += [f"{name}: {preset['description']}" for name, preset in PRESETS.items()]
    return "\n".join(lines)
