"""Configuration and data of `maskedbert srnet` (the pipelines themselves are in srnet.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from maskedbert import evaluation as ev
from maskedbert import losses as loss_lib
from maskedbert import pruning

PIPELINES = ("ft_prune", "prune_ft", "mask_pretrained")
METHODS = ("mask", "imp")
RESULT_COLUMNS = ("pipeline", "method", "loss", "sparsity", "measured_sparsity", "id_accuracy", "ood_accuracy",
                  "ood_entailment", "ood_non_entailment", "mask_change", "seconds")


@dataclass
class SRNetConfig:
    out: str = "runs/srnet"
    task: str = "synthetic-nli"
    data_dir: str | None = None
    ood_task: str = "hans"
    ood_data_dir: str | None = None
    ood_split: str = "validation"
    model: str = "offline-minilm"
    pipelines: list[str] = field(default_factory=lambda: list(PIPELINES))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    losses: list[str] = field(default_factory=lambda: ["ce", "poe"])
    sparsities: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.7, 0.9])
    oracle: bool = False
    # "hans_features" (lexical overlap, Clark et al. 2019), "features" (+ negation, length),
    # "hypothesis_only", or a JSON/JSONL file of probabilities keyed by example id
    bias_model: str = "hans_features"
    teacher_probs: str | None = None  # file; default: the CE fine-tuned model's predictions
    anneal_floor: float | None = None  # Utama et al.'s bias annealing (e.g. 0.8); None: off
    ft_steps: int = 300
    prune_steps: int = 300
    batch_size: int = 32
    lr: float = 2e-5
    lr_scores: float = 1e-3
    max_length: int = 128
    threshold: float = 1e-2
    initial_sparsity: float = 0.7  # cubic schedule start (capped at the target)
    sparsity_method: str = "threshold_reset"
    reset_every: int = 50
    scope: str = "layer"
    imp_per_round: float = 0.1
    imp_amount_of: str = "original"
    rewind_classifier: bool = False
    # ft_prune prunes the model fine-tuned with the same loss, the CE one ("ce"), or the weights in a
    # checkpoint (a model directory or a .safetensors/.bin file, e.g. an intermediate fine-tuning step)
    prune_start: str = "same_loss"
    rewind_to: str | None = None  # IMP: a checkpoint to rewind to; default the weights IMP started from
    train_classifier: bool | None = None  # mask training: None = freeze a fine-tuned head, train a new one
    save_ft_steps: list[int] = field(default_factory=list)  # also save fine-tuning checkpoints at these steps
    train_size: int = 3000  # synthetic task sizes
    dev_size: int = 600
    challenge_per_cell: int = 100
    train_limit: int | None = None  # real tasks: keep the first N examples
    eval_limit: int | None = None
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    config_overrides: dict = field(default_factory=dict)  # model config fields, e.g. tiny sizes

    def __post_init__(self):
        for name, allowed in (("pipelines", PIPELINES), ("methods", METHODS)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {getattr(self, name)}")
        self.losses = [loss_lib.canonical_loss_name(n) for n in self.losses]
        if not self.losses:
            raise ValueError("losses must not be empty")
        if not self.sparsities or any(not 0.0 < s < 1.0 for s in self.sparsities):
            raise ValueError(f"sparsities must be numbers in (0, 1), got {self.sparsities}")
        self.sparsities = sorted(set(float(s) for s in self.sparsities))
        if self.sparsity_method not in pruning.SPARSITY_METHODS:
            raise ValueError(f"sparsity_method must be one of {pruning.SPARSITY_METHODS}, got {self.sparsity_method!r}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if self.prune_start not in ("same_loss", "ce") and not os.path.exists(self.prune_start):
            raise ValueError(f"prune_start must be 'same_loss', 'ce' or an existing checkpoint, "
                             f"got {self.prune_start!r}")
        if self.rewind_to is not None and not os.path.exists(self.rewind_to):
            raise ValueError(f"rewind_to must be an existing checkpoint, got {self.rewind_to!r}")
        for name in ("ft_steps", "prune_steps", "batch_size", "reset_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# ---- data ---------------------------------------------------------------------------------------------
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


def load_task_data(cfg: SRNetConfig) -> TaskData:
    from maskedbert.data.examples import Example

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
    from maskedbert.data.tasks import get_task, load_examples

    spec = get_task(cfg.task)
    train = load_examples(spec, "train", data_dir=cfg.data_dir, limit=cfg.train_limit)
    dev = load_examples(spec, spec.dev_split, data_dir=cfg.data_dir, limit=cfg.eval_limit)
    ood = load_examples(cfg.ood_task, cfg.ood_split, data_dir=cfg.ood_data_dir, limit=cfg.eval_limit)
    ood_train = None
    if cfg.oracle:
        ood_train = load_examples(cfg.ood_task, "train", data_dir=cfg.ood_data_dir, limit=cfg.train_limit)
    return TaskData(train, dev, ood, ood_train, tuple(spec.label_names), _ood_kind(cfg.ood_task), None)
