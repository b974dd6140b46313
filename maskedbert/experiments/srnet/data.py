"""The data of `maskedbert srnet`: the synthetic NLI task offline, or a registered task and its OOD set."""
from __future__ import annotations

from dataclasses import dataclass, field

from maskedbert import evaluation as ev
from maskedbert.data import synthetic_nli as sn
from maskedbert.data.examples import Example
from maskedbert.data.tasks import get_task, load_examples
from maskedbert.experiments.srnet.config import parse_extra_ood


@dataclass
class TaskData:
    train: list
    dev: list
    ood: list
    ood_train: list | None
    label_names: tuple
    ood_kind: str
    vocab: list | None  # closed vocabulary (synthetic task) for word-level tiny tokenizers
    metric: str = "accuracy"  # the task's main dev metric (QQP: f1)
    oracle_kind: str = "hans"  # the kind of the oracle's OOD training data
    extra_ood: list = field(default_factory=list)  # (name, kind, examples) of each --extra-ood set


def _ood_kind(name: str) -> str:
    key = ev.normalize_name(name)
    if key.startswith("hans") or key == "synthetic_hans":
        return "hans"
    if key.startswith("paws"):
        return "paws"
    if key.startswith("fever_symmetric"):
        return "fever_symmetric"
    raise ValueError(f"ood_task must be hans, paws-* or fever-symmetric-*, got {name!r}")


# the label names of each OOD kind's examples (maskedbert.data.formats; PAWS: not paraphrase, paraphrase)
OOD_LABELS = {"hans": ("entailment", "non-entailment"), "paws": ("not_paraphrase", "paraphrase"),
              "fever_symmetric": ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")}


def oracle_label_index(ood_kind: str, label: int, task_labels) -> int:
    """The task label an OOD training example trains as, the reference's way: each set keeps its own
    label index in the reference's order (llyx97/sparse-and-robust-PLM load_dataset.py:577), so HANS
    non-entailment (its index 0, :212) is MNLI's contradiction (index 0, processors/glue.py:233), PAWS
    0/1 is QQP's 0/1 and FEVER-Symmetric shares FEVER's labels."""
    name = OOD_LABELS[ood_kind][label]
    if name in task_labels:
        return list(task_labels).index(name)
    if ood_kind == "hans" and "contradiction" in task_labels:
        return list(task_labels).index("contradiction")
    return label  # PAWS: the same index (0 not duplicate / not paraphrase, 1 duplicate / paraphrase)


def load_task_data(cfg) -> TaskData:
    """Train / dev / OOD examples for an SRNetConfig (the synthetic task is generated from cfg.seed)."""
    if cfg.task == "synthetic-nli":
        data = sn.make_synthetic_nli(cfg.train_size, cfg.dev_size, cfg.challenge_per_cell, seed=cfg.seed)
        to_ex = lambda d: Example(d["id"], d["premise"], d["hypothesis"], d["label"],  # noqa: E731
                                  {"heuristic": d["heuristic"], "subcase": d["subcase"]})
        oracle = sn.generate_challenge(max(cfg.challenge_per_cell, 20), seed=cfg.seed + 1, id_prefix="oracle-train")
        vocab = sorted({w for split in ("train", "validation", "challenge") for d in data[split]
                        for w in (d["premise"] + " " + d["hypothesis"]).split()})
        return TaskData([to_ex(d) for d in data["train"]], [to_ex(d) for d in data["validation"]],
                        [to_ex(d) for d in data["challenge"]], [to_ex(d) for d in oracle],
                        tuple(data["label_names"]), "hans", vocab)
    spec = get_task(cfg.task)
    train = load_examples(spec, "train", data_dir=cfg.data_dir, limit=cfg.train_limit)
    dev = load_examples(spec, spec.dev_split, data_dir=cfg.data_dir, limit=cfg.eval_limit)
    ood = load_examples(cfg.ood_task, cfg.ood_split, data_dir=cfg.ood_data_dir, limit=cfg.eval_limit)
    ood_train = None
    oracle = cfg.for_cell("oracle", "mask")  # a preset's oracle settings
    if cfg.oracle:
        ood_train = load_examples(oracle.oracle_task or cfg.ood_task, oracle.oracle_split, data_dir=cfg.ood_data_dir,
                                  limit=cfg.train_limit) * oracle.oracle_repeat
        for entry in oracle.oracle_extra:  # e.g. QQP's oracle adds PAWS-Wiki train to PAWS-QQP train
            task, split, folder = parse_extra_ood(entry)
            ood_train += load_examples(task, split, data_dir=folder or cfg.ood_data_dir, limit=cfg.train_limit)
    extra = []
    for entry in cfg.extra_ood:
        task, split, folder = parse_extra_ood(entry)
        examples = load_examples(task, split, data_dir=folder or cfg.ood_data_dir, limit=cfg.eval_limit)
        extra.append((f"{task}:{split}", _ood_kind(task), examples))
    return TaskData(train, dev, ood, ood_train, tuple(spec.label_names), _ood_kind(cfg.ood_task), None, spec.metric,
                    _ood_kind(oracle.oracle_task or cfg.ood_task), extra)
