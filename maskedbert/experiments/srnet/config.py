"""Configuration of `maskedbert srnet` and the protocol each pipeline follows (docs/PROTOCOLS.md).

Defaults follow Liu et al. (2022); where the paper is silent, the reference code
(llyx97/sparse-and-robust-PLM). Every choice is a field; the "auto" values resolve per pipeline in
`SRNetConfig.protocol`, and the resolved values are saved in config.json beside the results.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from maskedbert.choices import AMOUNT_OF, CLIP_MODES, SELECT_MODES, SPARSITY_METHODS
from maskedbert.config import check_sparsity
from maskedbert.errors import UsageError
from maskedbert.loss_registry import canonical_loss_name, loss_names

PIPELINES = ("ft_prune", "prune_ft", "mask_pretrained")
METHODS = ("mask", "imp")
RESULT_COLUMNS = ("pipeline", "method", "loss", "sparsity", "measured_sparsity", "id_accuracy", "id_metric",
                  "ood_accuracy", "ood_more",
                  "ood_entailment", "ood_non_entailment", "mask_change", "selected_step", "seconds")
REWIND_CHOICES = ("auto", "none", "start")
AUTO_YES_NO = ("auto", "yes", "no")
SCORE_INITS = ("magnitude", "magnitude_soft")
FT_SELECT = ("best", "last")
IMP_SCHEDULES = ("budget", "round")
PRUNE_FT_TICKETS = ("finetune", "round")
PRUNE_FT_MASKS = ("own", "ft_prune_poe")
ORACLE_DATA = ("id+ood", "ood")
PHASES = ("ticket",)  # overrides may also name "<pipeline>/<method>/ticket": (b)'s ticket fine-tuning
# fields that only say which cells to run; any other change makes earlier cells incomparable
SWEEP_FIELDS = ("out", "pipelines", "methods", "losses", "sparsities", "oracle", "preset", "keep_checkpoints")


@dataclass
class SRNetConfig:
    out: str = "runs/srnet"
    preset: str | None = None  # the settings came from this preset (maskedbert srnet --list-presets)
    task: str = "synthetic-nli"
    data_dir: str | None = None
    ood_task: str = "hans"
    ood_data_dir: str | None = None
    ood_split: str = "validation"
    # more OOD sets evaluated beside --ood-task, "task:split" or "task:split=DIR" (DIR: --ood-data-dir);
    # the reference evaluates PAWS-Wiki test with QQP and FEVER-Symmetric v2 test with FEVER
    extra_ood: list[str] = field(default_factory=list)
    model: str = "offline-minilm"
    tokenizer: str | None = None  # a name or folder, for a --model folder saved without its tokenizer
    pipelines: list[str] = field(default_factory=lambda: list(PIPELINES))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    losses: list[str] = field(default_factory=lambda: ["ce", "poe"])
    sparsities: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.7, 0.9])
    oracle: bool = False
    # "hans_features" (lexical overlap, Clark et al. 2019), "features" (+ negation, length),
    # "hypothesis_only", or a probabilities file (JSON/JSONL keyed by example id, or .npy rows in file order)
    bias_model: str = "hans_features"
    teacher_probs: str | None = None  # file; default: the CE fine-tuned model's predictions
    # the column order of a bias / teacher file that does not name its labels (.npy), as label names
    # "a,b,c"; needed for more than two classes (the reference's MNLI files: contradiction,entailment,neutral)
    bias_label_order: str | None = None
    teacher_label_order: str | None = None
    anneal_floor: float | None = None  # Utama et al.'s bias annealing (e.g. 0.8); None: off
    # training length: epochs win over steps when given (steps = int(ceil(examples / batch) * epochs))
    ft_steps: int = 300
    ft_epochs: float | None = None
    prune_steps: int = 300  # one mask-training run, or one IMP round
    prune_epochs: float | None = None
    batch_size: int = 32
    lr: float = 2e-5
    lr_scores: float = 1e-3
    warmup_steps: int | None = None  # None: warmup_ratio of each run's steps
    warmup_ratio: float = 0.1
    adam_eps: float = 1e-8  # the reference's AdamW (hg_transformers/training_args.py:70)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip_mode: str = "global"  # or "per_parameter" (the reference's QQP runs)
    ft_epochs_by_loss: dict = field(default_factory=dict)  # e.g. {"poe": 5}: MNLI's debiased dense runs
    max_length: int = 128
    threshold: float = 1e-2
    # mask training starts at initial_sparsity (None: the target, i.e. fixed sparsity, the paper's main
    # setting); below the target the sparsity rises on the cubic schedule (GSI, Sec. 3.6.2) until
    # ramp_end of training
    initial_sparsity: float | None = None
    ramp_end: float = 0.8
    score_init: str = "magnitude"
    sparsity_method: str = "threshold_reset"
    reset_every: int = 50
    scope: str = "layer"
    # mask selection: the best ID dev accuracy among evaluations every eval_every steps after
    # select_after of training (ties: the later step), or the last mask
    select: str = "best"
    select_after: float = 0.7
    select_ties: str = "earlier"  # an equal metric keeps the earlier mask (the reference's strict >) or the later
    eval_every: int | None = None  # None: a tenth of the mask-training steps
    imp_per_round: float = 0.1
    imp_amount_of: str = "original"
    rewind: str = "auto"  # IMP: auto = none for ft_prune, the pre-trained weights (start) for prune_ft
    rewind_classifier: bool = False
    # ft_prune prunes the model fine-tuned with the same loss, the CE one ("ce"), or the weights in a
    # checkpoint (a model directory or a .safetensors/.bin file, e.g. an intermediate fine-tuning step)
    prune_start: str = "same_loss"
    rewind_to: str | None = None  # IMP with rewinding: a checkpoint to rewind to; default its start weights
    mask_classifier: str = "auto"  # auto = yes: the paper prunes the task classifier too
    train_classifier: str = "auto"  # mask training: auto = no (no parameter value changes); weight training: yes
    save_ft_steps: list[int] = field(default_factory=list)  # also save fine-tuning checkpoints at these steps
    # every selection (dense models, masks, tickets) maximises this ID dev metric; auto: the task's (QQP: f1)
    select_metric: str = "auto"
    # dense models (and so the conf-reg teacher) and (b)'s tickets: the best dev checkpoint among
    # evaluations every ft_eval_every steps (strict >: ties keep the earlier step; none at the last
    # step unless it is a multiple), as the reference; or the last model
    ft_select: str = "best"
    ft_eval_every: int | None = None  # None: a tenth of the run
    # IMP: every round builds a fresh AdamW and a linear schedule over the whole budget (all rounds,
    # "budget", the reference) or over the round alone ("round")
    imp_schedule: str = "budget"
    imp_search_loss: str = "same"  # (b) IMP searches with the cell's loss ("same") or this one (reference: poe)
    # (b): each ticket is fine-tuned on its own from the pre-trained weights and initial head ("finetune");
    # "round": IMP's own round training is the level's result (mask training always fine-tunes)
    prune_ft_ticket: str = "finetune"
    # (b) with mask training: the masks of mask training the pre-trained model with the cell's loss
    # ("own"), or of (a)'s PoE mask training on the CE fine-tuned model ("ft_prune_poe", the reference)
    prune_ft_masks: str = "own"
    oracle_data: str = "id+ood"  # the oracle trains on ID + OOD training data (the reference) or OOD only
    oracle_task: str | None = None  # the OOD training data: this task (None: --ood-task), its split, repeated
    oracle_split: str = "train"
    oracle_repeat: int = 1
    oracle_extra: list[str] = field(default_factory=list)  # more OOD training sets, "task:split[=DIR]"
    train_size: int = 3000  # synthetic task sizes
    dev_size: int = 600
    challenge_per_cell: int = 100
    train_limit: int | None = None  # real tasks: keep the first N examples
    eval_limit: int | None = None
    seed: int = 0
    keep_checkpoints: bool = False  # keep finished training runs' checkpoints (logs/<run>/checkpoint.pt)
    device: str = "auto"  # "auto": cuda when available, else cpu
    report_to: str = "none"  # every training run also logs to "tensorboard" or "wandb" (logs/<run>/)
    config_overrides: dict = field(default_factory=dict)  # model config fields, e.g. tiny sizes
    # per "pipeline/method" (e.g. "ft_prune/imp", "mask_pretrained/mask"): fields that differ there
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, allowed in (("pipelines", PIPELINES), ("methods", METHODS)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad or not getattr(self, name):
                raise UsageError(f"--{name}: must be a non-empty comma list of {', '.join(allowed)}; "
                                 f"got {','.join(getattr(self, name)) or 'nothing'}")
        try:
            self.losses = [canonical_loss_name(n) for n in self.losses]
        except ValueError as err:
            raise UsageError(f"--losses: {err}") from None
        if not self.losses:
            raise UsageError(f"--losses: must not be empty; choose from {', '.join(loss_names())}")
        if not self.sparsities:
            raise UsageError("--sparsities: give at least one sparsity (a fraction pruned, 0 <= s < 1)")
        self.sparsities = sorted(set(check_sparsity(s, "--sparsities") for s in self.sparsities))
        choices = (("sparsity_method", SPARSITY_METHODS), ("scope", ("layer", "global")),
                   ("select", SELECT_MODES), ("rewind", REWIND_CHOICES), ("mask_classifier", AUTO_YES_NO),
                   ("train_classifier", AUTO_YES_NO), ("score_init", SCORE_INITS),
                   ("imp_amount_of", AMOUNT_OF), ("clip_mode", CLIP_MODES),
                   ("ft_select", FT_SELECT), ("imp_schedule", IMP_SCHEDULES), ("prune_ft_ticket", PRUNE_FT_TICKETS),
                   ("prune_ft_masks", PRUNE_FT_MASKS), ("oracle_data", ORACLE_DATA),
                   ("select_ties", ("earlier", "later")))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{_flag(name)}: must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.prune_start not in ("same_loss", "ce") and not os.path.exists(self.prune_start):
            raise UsageError(f"--prune-start: must be same_loss, ce or an existing checkpoint, got {self.prune_start!r}")
        if self.rewind_to is not None and not os.path.exists(self.rewind_to):
            raise UsageError(f"--rewind-to: must be an existing checkpoint, got {self.rewind_to!r}")
        if self.rewind_to is not None and self.rewind == "none":
            raise UsageError("--rewind-to: needs rewinding, but --rewind is none")
        for name in ("ft_steps", "prune_steps", "batch_size", "reset_every", "oracle_repeat"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{_flag(name)}: must be >= 1, got {getattr(self, name)}")
        for name in ("ft_epochs", "prune_epochs"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise UsageError(f"--{_flag(name)}: must be > 0, got {getattr(self, name)}")
        for name in ("eval_every", "ft_eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--{_flag(name)}: must be >= 1, got {getattr(self, name)}")
        for entry in self.extra_ood + self.oracle_extra:
            parse_extra_ood(entry)
        if self.imp_search_loss != "same":
            try:
                self.imp_search_loss = canonical_loss_name(self.imp_search_loss)
            except ValueError as err:
                raise UsageError(f"--imp-search-loss: same or a loss name; {err}") from None
        cells = {f"{p}/{m}" for p in PIPELINES + ("oracle",) for m in METHODS}
        cells |= {f"{cell}/{phase}" for cell in cells for phase in PHASES}
        for key, values in self.overrides.items():
            unknown = set(values) - {f.name for f in dataclasses.fields(self)} if isinstance(values, dict) else None
            if key not in cells or unknown is None or unknown or "overrides" in values:
                raise UsageError(f"overrides: {key!r} must be one of {sorted(cells)} mapping to srnet settings, "
                                 f"got {values!r}")
        if self.initial_sparsity is not None and not 0.0 <= self.initial_sparsity < 1.0:
            raise UsageError(f"--initial-sparsity: must be a fraction in [0, 1), got {self.initial_sparsity}")
        for name in ("select_after", "ramp_end", "warmup_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"--{_flag(name)}: must be a fraction in [0, 1], got {getattr(self, name)}")

    # ---- resolution -------------------------------------------------------------------------------
    def for_cell(self, pipeline: str, method: str, phase: str | None = None) -> "SRNetConfig":
        """The config one pipeline/method runs with: `overrides` applied (a preset's per-pipeline values);
        with phase="ticket", also those of "<pipeline>/<method>/ticket" ((b)'s ticket fine-tuning)."""
        values = dict(self.overrides.get(f"{pipeline}/{method}", {}))
        if phase is not None:
            values.update(self.overrides.get(f"{pipeline}/{method}/{phase}", {}))
        return dataclasses.replace(self, **values) if values else self

    def steps(self, phase: str, train_examples: int, loss: str | None = None) -> int:
        """Optimizer steps of a fine-tuning ("ft") or pruning ("prune") run: from epochs when given."""
        epochs = {"ft": self.ft_epochs, "prune": self.prune_epochs}[phase]
        if phase == "ft" and loss in self.ft_epochs_by_loss:
            epochs = self.ft_epochs_by_loss[loss]
        if epochs is None:
            return {"ft": self.ft_steps, "prune": self.prune_steps}[phase]
        # the reference's count: whole batches per epoch (the last one partial), then x epochs truncated
        # (hg_transformers/mask_trainer.py:447, trainer_imp.py:556)
        return max(1, int(math.ceil(train_examples / self.batch_size) * epochs))

    def start_sparsity(self, target: float) -> float:
        """Mask training's initial sparsity for a target: fixed (the target) unless GSI asks lower."""
        return target if self.initial_sparsity is None else min(self.initial_sparsity, target)

    def resolved_eval_every(self, prune_steps: int) -> int:
        return self.eval_every if self.eval_every is not None else max(1, prune_steps // 10)

    def resolved_ft_eval_every(self, ft_steps: int) -> int:
        return self.ft_eval_every if self.ft_eval_every is not None else max(1, ft_steps // 10)

    def imp_schedule_steps(self, round_steps: int) -> int | None:
        """The LR horizon of one IMP round: the whole budget (round steps x rounds to the end) or the round."""
        if self.imp_schedule == "round":
            return None
        return round_steps * max(1, round(1 / self.imp_per_round))

    def protocol(self, pipeline: str, method: str) -> dict:
        """What one pipeline x method does, with the "auto" choices resolved (saved in config.json).

        IMP: both pipelines skip the first training (a: the model is already fine-tuned; b: the paper
        prunes the pre-trained weights first) and rewind only in (b). Mask training never changes a
        parameter value unless train_classifier says so; the task head is masked with the rest.
        """
        if pipeline not in PIPELINES + ("oracle",) or method not in METHODS:
            raise ValueError(f"unknown pipeline/method {pipeline!r}/{method!r}")
        mask_head = self.mask_classifier != "no"
        out = {"mask_classifier": mask_head, "score_init": self.score_init, "scope": self.scope}
        if method == "imp":
            rewind = self.rewind if self.rewind != "auto" else ("none" if pipeline == "ft_prune" else "start")
            out.update(rewind=rewind, rewind_to=self.rewind_to if rewind == "start" else None,
                       rewind_classifier=self.rewind_classifier, skip_first_training=True, train_classifier=True,
                       amount_of=self.imp_amount_of, per_round=self.imp_per_round)
            return out
        out.update(train_classifier_mask_training=self.train_classifier == "yes", select=self.select,
                   select_after=self.select_after, initial_sparsity=self.initial_sparsity,
                   ramp_end=self.ramp_end, sparsity_method=self.sparsity_method)
        if pipeline == "prune_ft":  # the subnetwork's weights then train: its head with them
            out["train_classifier_finetuning"] = self.train_classifier != "no"
        return out


def _flag(name: str) -> str:
    return name.replace("_", "-")


def parse_extra_ood(entry: str) -> tuple[str, str, str | None]:
    """("task", "split", data dir or None) of an --extra-ood entry "task:split[=DIR]"."""
    spec, _, folder = str(entry).partition("=")
    task, _, split = spec.partition(":")
    if not task or not split:
        raise UsageError(f"--extra-ood: expected task:split or task:split=DIR (e.g. paws-wiki:test), got {entry!r}")
    return task.strip(), split.strip(), folder.strip() or None
