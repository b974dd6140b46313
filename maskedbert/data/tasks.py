"""Task registry: GLUE, HANS, PAWS, FEVER (+ Symmetric) and offline synthetic tasks.

    spec = get_task("rte")
    train = load_examples("rte", "train", data_dir="glue_data/RTE")   # original TSV files
    dev = load_examples("rte", spec.dev_split)                          # hub, through `datasets`

With `data_dir` a task reads its original distribution files; without, it loads from the hub by
name (`datasets` is imported only then). Synthetic tasks are generated, seeded, and need neither.
Label indices follow `spec.label_names`; map them to a model's head with metrics.label_mapping.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from maskedbert import _hub
from maskedbert.errors import UsageError

from . import formats
from .examples import Example
from .synthetic import SYNTHETIC_PAIR_LABELS, synthetic_pair_examples
from .synthetic_nli_task import HANS_LABELS, NLI3_LABELS, challenge_examples, nli_examples

__all__ = ["TaskSpec", "TASKS", "register_task", "get_task", "list_tasks", "load_examples", "check_data_source"]


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: labels, metrics, splits and where its data comes from.

    metric: the task's main metric (model selection and failed-run test); metrics: all reported.
    local_files: split -> file name inside data_dir; hub: (path, config name or None) for `datasets`.
    ood: True for challenge sets used only to evaluate (HANS, PAWS, FEVER-Symmetric).
    """

    name: str
    label_names: tuple[str, ...]
    metric: str
    metrics: tuple[str, ...]
    dev_split: str = "validation"
    local_files: dict[str, str] = field(default_factory=dict)
    local_reader: str = "glue"
    reader_options: dict[str, Any] = field(default_factory=dict)
    hub: tuple[str, str | None] | None = None
    hub_split_names: dict[str, str] = field(default_factory=dict)
    hub_fields: tuple[str, str | None, str] = ("sentence1", "sentence2", "label")
    generator: Callable[..., list[Example]] | None = None
    ood: bool = False

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 1

    @property
    def is_regression(self) -> bool:
        return not self.label_names


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"spec must be a TaskSpec, got {type(spec).__name__}")
    if spec.name in TASKS and not overwrite:
        raise ValueError(f"task {spec.name!r} is already registered (pass overwrite=True to replace it)")
    TASKS[spec.name] = spec
    return spec


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    key = name.lower() if isinstance(name, str) else name
    if key not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    return TASKS[key]


def _glue(name, labels, metric, metrics, text_a, text_b, label, files=None, id_column=None, has_header=True,
          hub_fields=None, dev_split="validation", hub_config=None, hub_split_names=None):
    files = files or {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    register_task(TaskSpec(
        name=name, label_names=labels, metric=metric, metrics=metrics, dev_split=dev_split,
        local_files=files, local_reader="glue",
        reader_options=dict(text_a=text_a, text_b=text_b, label=label, id_column=id_column, has_header=has_header),
        hub=("nyu-mll/glue", hub_config or name.replace("-", "")), hub_split_names=hub_split_names or {},
        hub_fields=hub_fields or ("sentence1", "sentence2", "label"),
    ))


_NLI = ("entailment", "neutral", "contradiction")
_glue("rte", ("entailment", "not_entailment"), "accuracy", ("accuracy",), "sentence1", "sentence2", "label",
      id_column="index")
_glue("mrpc", ("not_equivalent", "equivalent"), "f1", ("accuracy", "f1", "acc_and_f1"),
      "#1 String", "#2 String", "Quality", hub_fields=("sentence1", "sentence2", "label"))
_glue("cola", ("unacceptable", "acceptable"), "mcc", ("mcc", "accuracy"), 3, None, 1, has_header=False,
      hub_fields=("sentence", None, "label"))
_glue("sst-2", ("negative", "positive"), "accuracy", ("accuracy",), "sentence", None, "label",
      hub_fields=("sentence", None, "label"), hub_config="sst2")
_glue("qqp", ("not_duplicate", "duplicate"), "f1", ("accuracy", "f1", "acc_and_f1"), "question1", "question2",
      "is_duplicate", id_column="id", hub_fields=("question1", "question2", "label"))
_glue("qnli", ("entailment", "not_entailment"), "accuracy", ("accuracy",), "question", "sentence", "label",
      id_column="index", hub_fields=("question", "sentence", "label"))
_glue("sts-b", (), "pearson_and_spearman", ("pearson", "spearman", "pearson_and_spearman"),
      "sentence1", "sentence2", "score", id_column="index", hub_config="stsb")
_MNLI_FILES = {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
               "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
               "test_mismatched": "test_mismatched.tsv"}
_glue("mnli", _NLI, "accuracy", ("accuracy",), "sentence1", "sentence2", "gold_label", files=_MNLI_FILES,
      id_column="pairID", hub_fields=("premise", "hypothesis", "label"), dev_split="validation_matched")
_glue("mnli-mm", _NLI, "accuracy", ("accuracy",), "sentence1", "sentence2", "gold_label", files=_MNLI_FILES,
      id_column="pairID", hub_fields=("premise", "hypothesis", "label"), dev_split="validation_mismatched",
      hub_config="mnli")

register_task(TaskSpec(
    name="hans", label_names=formats.HANS_LABELS, metric="accuracy", metrics=("accuracy",),
    local_files={"train": "heuristics_train_set.txt", "validation": "heuristics_evaluation_set.txt"},
    local_reader="hans", hub=("jhu-cogsci/hans", None), hub_fields=("premise", "hypothesis", "label"), ood=True,
))
register_task(TaskSpec(
    name="paws-wiki", label_names=("not_paraphrase", "paraphrase"), metric="accuracy", metrics=("accuracy", "f1"),
    local_files={"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}, local_reader="paws",
    hub=("google-research-datasets/paws", "labeled_final"), ood=True,
))
# PAWS-QQP is not redistributed: it is generated from QQP with the PAWS scripts (local files only). The
# generator writes train.tsv and dev_and_test.tsv; the srnet reference (llyx97/sparse-and-robust-PLM,
# README.md:64-67) keeps that set as dev.tsv and test.tsv and evaluates dev.tsv ("dev" here)
register_task(TaskSpec(
    name="paws-qqp", label_names=("not_paraphrase", "paraphrase"), metric="accuracy", metrics=("accuracy", "f1"),
    local_files={"train": "train.tsv", "validation": "dev_and_test.tsv", "dev": "dev.tsv", "test": "test.tsv"},
    local_reader="paws", ood=True,
))
register_task(TaskSpec(
    name="fever", label_names=formats.FEVER_LABELS, metric="accuracy", metrics=("accuracy",),
    local_files={"train": "fever.train.jsonl", "validation": "fever.dev.jsonl"}, local_reader="fever",
))
register_task(TaskSpec(
    name="fever-symmetric-v1", label_names=formats.FEVER_LABELS, metric="accuracy", metrics=("accuracy",),
    local_files={"validation": "fever_symmetric_generated.jsonl"}, local_reader="fever", ood=True,
))
register_task(TaskSpec(
    name="fever-symmetric-v2", label_names=formats.FEVER_LABELS, metric="accuracy", metrics=("accuracy",),
    local_files={"validation": "fever_symmetric_dev.jsonl", "test": "fever_symmetric_test.jsonl"},
    local_reader="fever", ood=True,
))
register_task(TaskSpec(
    name="synthetic-pair", label_names=SYNTHETIC_PAIR_LABELS, metric="accuracy", metrics=("accuracy",),
    generator=synthetic_pair_examples,
))

# 3-label in-distribution NLI with a planted lexical-overlap shortcut, and its HANS-style challenge set
register_task(TaskSpec(
    name="synthetic-nli", label_names=tuple(NLI3_LABELS), metric="accuracy", metrics=("accuracy",),
    generator=nli_examples,
))
register_task(TaskSpec(
    name="synthetic-hans", label_names=tuple(HANS_LABELS), metric="accuracy", metrics=("accuracy",),
    generator=challenge_examples, ood=True,
))


# how messages from the loaders name the data folder: the commands' flag and the Python argument
_DATA_DIR_FLAG = "--data-dir / data_dir="


def _files_hint(spec: TaskSpec, splits: list[str], flag: str) -> str:
    wanted = list(dict.fromkeys([*splits, "train", spec.dev_split]))  # a run reads train and dev: name both
    names = [spec.local_files[split] for split in wanted if split in spec.local_files]
    return f"put the task's original files ({', '.join(names)}) in a folder and pass it as {flag}"


def check_data_source(spec: TaskSpec, splits: list[str], data_dir: str | None, *,
                      flag: str = _DATA_DIR_FLAG) -> None:
    """Raise UsageError, naming `flag`, unless `splits` of `spec` can be read: generated, from the files in
    `data_dir`, or from the hub (checked quickly: one connection, no retry loop). Reads no data."""
    if spec.generator is not None:
        if data_dir is not None:
            raise UsageError(f"{flag}: task {spec.name!r} is generated and reads no files; drop {flag}")
        return
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise UsageError(f"{flag}: no such directory {data_dir!r}; {_files_hint(spec, splits, flag)}")
        for split in splits:
            if split not in spec.local_files:
                raise UsageError(f"{flag}: task {spec.name!r} has no {split!r} split in its files "
                                 f"(it has {', '.join(sorted(spec.local_files))})")
        missing = [spec.local_files[s] for s in splits if not os.path.isfile(os.path.join(data_dir, spec.local_files[s]))]
        if missing:
            raise UsageError(f"{flag}: {data_dir!r} lacks {', '.join(missing)}; "
                             f"{_files_hint(spec, splits, flag)}")
        return
    _check_hub_source(spec, splits, flag)


def _check_hub_source(spec: TaskSpec, splits: list[str], flag: str) -> None:
    hint = _files_hint(spec, splits, flag)
    if spec.hub is None:
        raise UsageError(f"{flag}: task {spec.name!r} has no hub copy; {hint}")
    if importlib.util.find_spec("datasets") is None:  # the GPU machine has no `datasets`
        raise UsageError(f"{flag}: loading {spec.name!r} from the hub needs the `datasets` package "
                         f"(pip install datasets); or {hint}")
    if _hub.offline_mode():
        return  # `datasets` reads its cache and fails fast when the task is not there
    reason = _hub.hub_unreachable_reason()
    if reason:
        raise UsageError(f"{flag}: task {spec.name!r} loads from the hub, which is unreachable ({reason}); {hint} "
                         f"(or set HF_DATASETS_OFFLINE=1 to use a copy in the datasets cache)")


def _load_local(spec: TaskSpec, split: str, data_dir: str) -> list[Example]:
    check_data_source(spec, [split], data_dir)
    path = os.path.join(data_dir, spec.local_files[split])
    if spec.local_reader == "glue":
        options = dict(spec.reader_options)
        if split.startswith("test"):
            options["label"] = None  # GLUE test files hide labels
        return formats.read_glue_tsv(path, task=spec.name, split=split, label_names=spec.label_names, **options)
    if spec.local_reader == "hans":
        return formats.read_hans_txt(path, task=spec.name, split=split)
    if spec.local_reader == "paws":
        return formats.read_paws_tsv(path, task=spec.name, split=split)
    if spec.local_reader == "fever":
        return formats.read_fever_jsonl(path, task=spec.name, split=split)
    raise ValueError(f"unknown local_reader {spec.local_reader!r} for task {spec.name!r}")


def _load_hub(spec: TaskSpec, split: str) -> list[Example]:
    _check_hub_source(spec, [split], _DATA_DIR_FLAG)
    import datasets  # optional dependency (the GPU machine has none); keeps --help torch-free

    path, config = spec.hub
    hub_split = spec.hub_split_names.get(split, split)
    try:
        rows = datasets.load_dataset(path, config, split=hub_split)
    except (ConnectionError, OSError, ValueError) as exc:  # offline / not cached / hub errors come as these
        raise UsageError(
            f"{_DATA_DIR_FLAG}: could not load task {spec.name!r} (split {split!r}) from the hub as "
            f"{path!r}/{config!r} ({type(exc).__name__}: {exc}); {_files_hint(spec, [split], _DATA_DIR_FLAG)}"
        ) from exc
    a_field, b_field, label_field = spec.hub_fields
    examples = []
    for i, row in enumerate(rows):
        row_id = row.get("idx", row.get("id", i))
        meta = {k: row[k] for k in ("heuristic", "subcase", "template") if k in row}
        examples.append(Example(
            id=f"{spec.name}-{split}-{row_id}",
            text_a=row[a_field],
            text_b=row[b_field] if b_field else None,
            label=row[label_field],
            meta=meta,
        ))
    return examples


def load_examples(task: str | TaskSpec, split: str, *, data_dir: str | None = None, seed: int = 0,
                  limit: int | None = None) -> list[Example]:
    """Examples of one split: generated (synthetic), read from `data_dir`, or loaded from the hub.

    `limit` keeps the first `limit` examples (quick runs); `seed` only affects generated tasks.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if spec.generator is not None:
        examples = spec.generator(split, seed=seed)
    elif data_dir is not None:
        examples = _load_local(spec, split, data_dir)
    else:
        examples = _load_hub(spec, split)
    return examples if limit is None else examples[:limit]
