"""The data of `maskedbert srnet`: the synthetic NLI task offline, or a registered task and its OOD set."""
from __future__ import annotations

from dataclasses import dataclass

from maskedbert import evaluation as ev
from maskedbert.data.examples import Example
from maskedbert.data.tasks import get_task, load_examples


@dataclass
class TaskData:
    train: list
    dev: list
    ood: list
    ood_train: list | None
    label_names: tuple
    ood_kind: str
    vocab: list | None  # closed vocabulary (synthetic task) for word-level tiny tokenizers


def _ood_kind(name: str) -> str:
    key = ev.normalize_name(name)
    if key.startswith("hans") or key == "synthetic_hans":
        return "hans"
    if key.startswith("paws"):
        return "paws"
    if key.startswith("fever_symmetric"):
        return "fever_symmetric"
    raise ValueError(f"ood_task must be hans, paws-* or fever-symmetric-*, got {name!r}")


def load_task_data(cfg) -> TaskData:
    """Train / dev / OOD examples for an SRNetConfig (the synthetic task is generated from cfg.seed)."""
    if cfg.task == "synthetic-nli":
        from maskedbert.data import synthetic_nli as sn

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
    if cfg.oracle:
        ood_train = load_examples(cfg.ood_task, "train", data_dir=cfg.ood_data_dir, limit=cfg.train_limit)
    return TaskData(train, dev, ood, ood_train, tuple(spec.label_names), _ood_kind(cfg.ood_task), None)
