"""The training loop every experiment runs on (fine-tuning, IMP, mask training, debiasing).

API
---
    from maskedbert.train import Trainer, TrainConfig, make_evaluator

    trainer = Trainer(
        model,                       # nn.Module; default forward: model(input_ids, attention_mask, token_type_ids).logits
        TrainConfig(output_dir="runs/x", num_epochs=3, batch_size=16, lr=2e-5, warmup_ratio=0.1,
                    eval_every=100, best_metric="accuracy"),
        train_dataset,               # map-style dataset; items go through collate_fn into a dict batch
        collate_fn,                  # list of items -> dict of tensors (data.PadCollator)
        evaluate_fn=make_evaluator(dev_dataset, collate_fn, ["accuracy"]),   # model -> {name: float}
        loss_fn=None,                # (logits, batch) -> scalar; default cross-entropy (MSE for 1 output)
        forward_fn=None,             # (model, batch) -> logits
        param_groups=None,           # list of torch param-group dicts; default: decay / no-decay (bias, LayerNorm)
        optimizer_factory=None,      # param_groups -> Optimizer; default maskedbert.optim.AdamW(config's settings)
        step_callback=None,          # (trainer, step) after every optimizer step (raise sparsity, reset thresholds)
    )
    result = trainer.train(resume=True)   # dict: global_step, final_metrics, best_value, best_step, ...

Per optimizer step: forward/backward of `grad_accum_steps` micro-batches (loss averaged), a
finite-loss check, gradient norms (logged every `log_every` steps: each parameter's L2 norm before
clipping and the total), clipping (global or per parameter), optimizer and scheduler steps, then
step_callback, logging, evaluation every `eval_every` steps and at the end, and a checkpoint every
`checkpoint_every` steps and at the end.

- Data order: epoch e uses a permutation seeded by (seed, e); under DDP rank r takes every
  world_size-th index of it. Resuming recomputes the permutation and skips the consumed updates.
- Checkpoint `<output_dir>/checkpoint.pt` (atomic) holds model, optimizer, scheduler, grad scaler,
  RNG states of every rank, data position, best-so-far, `trainer.extra_state` (a dict callbacks
  may fill with their own resumable state) and the state_dict() of every object in
  `trainer.stateful` (name -> object with state_dict/load_state_dict, restored on resume). `train(resume=True)` continues from it; on CPU the
  result is bit-for-bit that of an uninterrupted run.
- Evaluation runs on rank 0 with the model in eval mode under no_grad; metrics are logged and
  broadcast. The best checkpoint is chosen by `best_metric` only at or after `select_best_after`
  (a fraction of training); names starting "ood/" (out-of-distribution sets) are refused.
  `save_best_model` writes the best weights to `<output_dir>/best_model.pt`.
- Periodic checkpoints: every `checkpoint_every` steps and, for a run that checkpoints at all
  (checkpoint_at_end or checkpoint_every), every `checkpoint_every_seconds` of wall time (default 30
  minutes: a run killed at a cluster's time limit loses at most that). Saving changes nothing in
  the run, so results do not depend on when checkpoints happen.
- SIGTERM and SIGUSR1 (what SLURM sends at the time limit, or `--signal=USR1@<s>` before it) finish
  the current optimizer step, write a checkpoint and raise TrainingInterrupted (a KeyboardInterrupt:
  the commands and sweep workers treat it as an interruption, not a failure). The handlers are
  installed only for the duration of `train()` in the main thread; the previous ones come back after.
- A checkpoint that does not load (truncated, or holding anything but tensors and plain data:
  checkpoints are read weights-only, never unpickled) is renamed `checkpoint.pt.unreadable-<time>`
  with a warning naming it, and the run starts over. Temporaries a killed run left in output_dir
  are deleted when the next run starts there.
- A non-finite loss (or gradient norm) raises NonFiniteLossError before any update: the last good
  checkpoint stays as it was. Logs: `<output_dir>/log.jsonl` records of type train/eval/event; train
  records hold loss, lr (and lr_groups when there are several groups), grad norms, and the measured
  mask sparsity for models with MaskedLinear layers. `report_to` also sends them to TensorBoard or
  W&B (maskedbert.train.reporting).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from maskedbert._atomic import remove_stale_temporaries, write_text_atomic
from maskedbert.choices import CLIP_MODES
from maskedbert.metrics import is_new_best
from maskedbert.optim import AdamW
from maskedbert.patching import masked_modules
from maskedbert.progress import progress_bar

from . import distributed as dist_utils
from .checkpoint import (UnreadableCheckpointError, atomic_torch_save, capture_rng_state, load_checkpoint,
                         load_weights, restore_rng_state, save_checkpoint, set_aside)
from .reporting import check_report_to
from .runlog import RunLogger
from .schedules import build_schedule

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "TrainingInterrupted", "STOP_SIGNALS", "set_seed", "default_forward", "default_loss",
           "MODEL_INPUT_KEYS", "OOD_PREFIX"]

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
OOD_PREFIX = "ood/"
NO_DECAY_SUFFIXES = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layernorm.weight")


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN or inf; the run stopped before applying the update."""


# signals that mean "save and stop": SLURM's time limit (SIGTERM) and its early warning (--signal=USR1@s)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal arrived; the run saved a checkpoint at `step` (when it checkpoints) and stopped."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint} holds step {step}" if checkpoint else "no checkpoint (this run keeps none)"
        super().__init__(f"{name} received: stopped after step {step}; {where}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


@dataclass
class TrainConfig:
    output_dir: str
    num_epochs: float = 3.0
    max_steps: int | None = None            # optimizer steps; overrides num_epochs when set
    batch_size: int = 16                    # per process and micro-batch
    grad_accum_steps: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    adam_eps: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    correct_bias: bool = True
    schedule: str = "linear"                # "linear" (warmup then decay to 0) or "constant"
    warmup_steps: int | None = None
    warmup_ratio: float | None = None
    warmup_rounding: str = "floor"          # warmup_ratio * steps: "floor" (reference code's int()) or "ceil"
    schedule_steps: int | None = None       # the schedule's horizon; None: this run's steps (a longer one
                                            # stops the decay part-way, as the reference's IMP rounds)
    max_grad_norm: float | None = 1.0       # None: no clipping
    clip_mode: str = "global"               # "global" or "per_parameter"
    precision: str = "fp32"                 # "fp32", "bf16" or "fp16" (autocast; fp16 needs CUDA)
    eval_every: int | None = None           # optimizer steps; evaluation also runs at the end
    eval_at_start: bool = False             # also evaluate the untrained model (step 0, a best-step candidate)
    eval_at_epoch_end: bool = False         # also evaluate after the last update of every epoch
    best_metric: str | None = None          # key of evaluate_fn's dict used to pick the best step
    greater_is_better: bool = True
    select_best_after: float = 0.0          # fraction of training before which no step counts as best
    save_best_model: bool = False
    log_every: int = 10
    log_grad_norms: bool = True
    checkpoint_every: int | None = None     # optimizer steps; a checkpoint is also written at the end
    checkpoint_at_end: bool = True          # False: no end-of-run checkpoint (throwaway runs; no resume)
    checkpoint_every_seconds: float | None = 1800.0  # wall time between checkpoints of a checkpointing run
    seed: int = 0
    drop_last: bool = False
    tensorboard: bool = False              # older spelling of report_to="tensorboard"
    report_to: str = "none"                 # "none", "tensorboard" or "wandb" (train.reporting); JSONL always
    run_name: str | None = None             # W&B run name (default: the output folder's name)
    progress: bool = True
    device: str | None = None               # default: the rank's CUDA device, else CPU
    ddp_find_unused_parameters: bool = False

    def __post_init__(self):
        positive = {"batch_size": self.batch_size, "grad_accum_steps": self.grad_accum_steps,
                    "log_every": self.log_every}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("max_steps", "eval_every", "checkpoint_every", "schedule_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        for name in ("lr", "weight_decay", "adam_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        norm = self.max_grad_norm
        if norm is not None and (isinstance(norm, bool) or not isinstance(norm, (int, float)) or not norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number or None (no clipping), got {norm!r}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be a fraction in [0, 1] or None, got {self.warmup_ratio!r}")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ValueError(f"warmup_steps must be an int >= 0 or None, got {self.warmup_steps!r}")
        seconds = self.checkpoint_every_seconds
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not math.isfinite(seconds) or seconds <= 0):
            raise ValueError(f"checkpoint_every_seconds must be a positive number of seconds or None, got {seconds!r}")
        if self.max_steps is None and not self.num_epochs > 0:
            raise ValueError(f"num_epochs must be > 0 (or set max_steps), got {self.num_epochs}")
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be 'global' or 'per_parameter', got {self.clip_mode!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if not 0.0 <= self.select_best_after <= 1.0:
            raise ValueError(f"select_best_after must be in [0, 1], got {self.select_best_after}")
        if self.best_metric is not None and self.best_metric.startswith(OOD_PREFIX):
            raise ValueError(f"best_metric must be an in-distribution metric, got {self.best_metric!r}: "
                             f"selecting checkpoints on out-of-distribution data leaks the test set")
        self.adam_betas = tuple(self.adam_betas)
        if self.tensorboard and self.report_to == "none":
            self.report_to = "tensorboard"
        check_report_to(self.report_to, "TrainConfig.report_to")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_forward(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    out = model(**{k: batch[k] for k in MODEL_INPUT_KEYS if k in batch})
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) else out


def default_loss(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    labels = batch["labels"]
    if logits.shape[-1] == 1 and labels.is_floating_point():
        return torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels)


def _masked_sparsity(layers) -> float:
    """Fraction of the masked layers' weights pruned (one host synchronisation, at log steps only)."""
    total = sum(layer.weight.numel() for layer in layers)
    kept = torch.stack([layer.mask().sum().to(layers[0].weight.device) for layer in layers]).sum()
    return float((total - kept.double()) / total)


def _default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(NO_DECAY_SUFFIXES) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Trainer:
    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_dataset, collate_fn: Callable,
                 *, evaluate_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 loss_fn: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
                 forward_fn: Callable[[torch.nn.Module, dict], torch.Tensor] | None = None,
                 param_groups: Sequence[dict[str, Any]] | None = None,
                 optimizer_factory: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None = None,
                 step_callback: Callable[["Trainer", int], None] | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if len(train_dataset) == 0:
            raise ValueError("train_dataset must not be empty")
        self.config = config
        self.train_dataset, self.collate_fn = train_dataset, collate_fn
        self.evaluate_fn, self.step_callback = evaluate_fn, step_callback
        self.loss_fn = loss_fn or default_loss
        self.forward_fn = forward_fn or default_forward
        self.distributed = dist_utils.init_distributed()
        self.rank, self.world_size = dist_utils.rank(), dist_utils.world_size()
        self.is_main = self.rank == 0
        self.device = torch.device(config.device) if config.device else (
            torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available()
            else torch.device("cpu"))
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device (use 'bf16' on CPU)")
        self.model = model.to(self.device)
        self.wrapped_model = self.model
        if self.distributed:
            self.wrapped_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters)
        groups = list(param_groups) if param_groups is not None else _default_param_groups(model, config.weight_decay)
        if optimizer_factory is None:
            self.optimizer = AdamW(groups, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps,
                                   weight_decay=config.weight_decay, correct_bias=config.correct_bias)
        else:
            self.optimizer = optimizer_factory(groups)
        self.updates_per_epoch = self._updates_per_epoch()
        self.total_steps = config.max_steps or max(1, math.ceil(config.num_epochs * self.updates_per_epoch))
        self.scheduler = build_schedule(self.optimizer, config.schedule, config.schedule_steps or self.total_steps,
                                        warmup_steps=config.warmup_steps, warmup_ratio=config.warmup_ratio,
                                        warmup_rounding=config.warmup_rounding)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.global_step, self.epoch, self.update_in_epoch = 0, 0, 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] | None = None
        self.last_metrics: dict[str, float] | None = None
        self.extra_state: dict[str, Any] = {}
        # objects with state_dict()/load_state_dict() saved in every checkpoint and restored on resume
        # (step callbacks that keep state: a mask selector, a sparsity controller)
        self.stateful: dict[str, Any] = {}
        self.checkpoint_path = os.path.join(config.output_dir, "checkpoint.pt")
        self.logger = RunLogger(config.output_dir, report_to=config.report_to, enabled=self.is_main,
                                run_config=asdict(config), run_name=config.run_name)
        self._window_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._window_steps = 0
        self._stop_signal: int | None = None
        self._last_checkpoint_time = time.monotonic()
        self._checkpointed_step: int | None = None
        self._masked_layers = list(masked_modules(model).values())  # logged as "sparsity" when present

    # data order ---------------------------------------------------------------------------------
    def _batches_per_rank(self) -> int:
        per_rank = math.ceil(len(self.train_dataset) / self.world_size)
        batches = per_rank // self.config.batch_size if self.config.drop_last else math.ceil(
            per_rank / self.config.batch_size)
        if batches < 1:
            raise ValueError(f"batch_size {self.config.batch_size} with drop_last leaves no batch "
                             f"({per_rank} examples per process)")
        return batches

    def _updates_per_epoch(self) -> int:
        return math.ceil(self._batches_per_rank() / self.config.grad_accum_steps)

    def epoch_updates(self, epoch: int) -> list[list[list[int]]]:
        """This rank's updates for `epoch`: a list of updates, each a list of micro-batches of indices."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_dataset), generator=generator).tolist()
        per_rank = math.ceil(len(order) / self.world_size)
        order += order[: per_rank * self.world_size - len(order)]  # pad so every rank has as many examples
        mine = order[self.rank::self.world_size]
        bs = self.config.batch_size
        batches = [mine[i:i + bs] for i in range(0, len(mine), bs)][: self._batches_per_rank()]
        accum = self.config.grad_accum_steps
        return [batches[i:i + accum] for i in range(0, len(batches), accum)]

    # checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": dist_utils.all_gather_object(capture_rng_state()),
            "global_step": self.global_step, "epoch": self.epoch, "update_in_epoch": self.update_in_epoch,
            "best_value": self.best_value, "best_step": self.best_step, "best_metrics": self.best_metrics,
            "last_metrics": self.last_metrics, "extra_state": self.extra_state,
            "stateful": {name: obj.state_dict() for name, obj in self.stateful.items()},
            "window_loss": self._window_loss.cpu(), "window_steps": self._window_steps,
            "total_steps": self.total_steps, "world_size": self.world_size, "config": asdict(self.config),
        }

    def save_checkpoint(self) -> None:
        state = self.state_dict()  # collective (RNG gather): every rank calls it
        if self.is_main:
            save_checkpoint(self.checkpoint_path, state)
        dist_utils.barrier()
        self._last_checkpoint_time = time.monotonic()
        self._checkpointed_step = self.global_step

    @property
    def checkpoints(self) -> bool:
        """Whether this run keeps a checkpoint (and so can resume)."""
        return self.config.checkpoint_at_end or self.config.checkpoint_every is not None

    def _resume_or_start(self, resume: bool) -> None:
        if resume and os.path.exists(self.checkpoint_path):
            try:
                state = load_checkpoint(self.checkpoint_path)
            except UnreadableCheckpointError as exc:
                dist_utils.barrier()  # every rank has read it before rank 0 moves it
                moved = set_aside(self.checkpoint_path) if self.is_main else exc.path
                warnings.warn(f"{exc.path} is unreadable ({exc.reason}); moved to {moved}, training starts over",
                              RuntimeWarning, stacklevel=3)
                self.logger.log({"type": "event", "step": 0, "event": "checkpoint_unreadable",
                                 "message": f"{exc}; moved to {moved}"})
            else:
                self.load_state_dict(state)
                self.logger.truncate_after(self.global_step)
                self.logger.log({"type": "event", "step": self.global_step, "event": "resumed"})
                return
        self.logger.truncate_after(-1)  # a fresh run starts a fresh log
        self.logger.log({"type": "event", "step": 0, "event": "start", "total_steps": self.total_steps,
                         "updates_per_epoch": self.updates_per_epoch, "world_size": self.world_size})

    # stop signals -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set in the main thread
            return

        def request_stop(signum, frame):
            self._stop_signal = signum  # acted on at the end of the current optimizer step

        previous = {}
        try:
            for signum in STOP_SIGNALS:
                previous[signum] = signal.signal(signum, request_stop)
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_and_checkpoint_due(self) -> tuple[bool, bool]:
        """(a stop signal arrived, the wall-time checkpoint is due), agreed by every rank."""
        seconds = self.config.checkpoint_every_seconds
        due = bool(self.checkpoints and seconds is not None
                   and time.monotonic() - self._last_checkpoint_time >= seconds)
        stop = self._stop_signal is not None
        if self.distributed:  # rank 0's clock decides; any rank's signal stops all
            flags = torch.tensor([float(stop), float(due and self.is_main)], device=self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            stop, due = bool(flags[0].item()), bool(flags[1].item())
        return stop, due

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["total_steps"] != self.total_steps:
            raise ValueError(f"checkpoint was made for {state['total_steps']} steps, this run has "
                             f"{self.total_steps}: the configuration changed")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        for key in ("global_step", "epoch", "update_in_epoch", "best_value", "best_step", "best_metrics",
                    "last_metrics", "extra_state"):
            setattr(self, key, state[key])
        saved = state.get("stateful", {})
        missing = sorted(set(self.stateful) - set(saved))
        if missing:
            raise ValueError(f"checkpoint holds no state for {missing}: it was made by another kind of run")
        for name, obj in self.stateful.items():
            obj.load_state_dict(saved[name])
        self._window_loss = state["window_loss"].to(self.device)
        self._window_steps = state["window_steps"]
        rng_states = state["rng"]
        restore_rng_state(rng_states[self.rank] if len(rng_states) == self.world_size else rng_states[0])

    def load_best_model(self) -> None:
        path = os.path.join(self.config.output_dir, "best_model.pt")
        self.model.load_state_dict(load_weights(path))

    # one optimizer step -------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _autocast(self):
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _stop_non_finite(self, what: str, value: float) -> None:
        where = self.checkpoint_path if os.path.exists(self.checkpoint_path) else "none written yet"
        message = (f"non-finite {what} ({value}) at step {self.global_step + 1} (epoch {self.epoch}); training "
                   f"stopped before the update. Last good checkpoint: {where}")
        self.logger.log({"type": "event", "step": self.global_step, "event": "non_finite", "message": message})
        raise NonFiniteLossError(message)

    def _train_step(self, update: list[list[int]], log_now: bool) -> dict[str, Any]:
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for j, indices in enumerate(update):
            batch = self._to_device(self.collate_fn([self.train_dataset[i] for i in indices]))
            sync = contextlib.nullcontext()
            if self.distributed and j < len(update) - 1:
                sync = self.wrapped_model.no_sync()  # all-reduce only once per update
            with sync:
                with self._autocast():
                    loss = self.loss_fn(self.forward_fn(self.wrapped_model, batch), batch)
                scaled = loss / len(update)
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().double() / len(update)
        if self.distributed:  # every rank must agree to stop
            flag = torch.tensor([0.0 if torch.isfinite(loss_sum) else 1.0], device=self.device)
            torch.distributed.all_reduce(flag)
            finite = flag.item() == 0
        else:
            finite = bool(torch.isfinite(loss_sum))
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self._stop_non_finite("loss", float(loss_sum))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        record: dict[str, Any] = {}
        params = [p for p in self.model.parameters() if p.requires_grad]
        with_grad = [(n, p) for n, p in zip(self.param_names, params) if p.grad is not None]
        if log_now and self.config.log_grad_norms and with_grad:
            norms = torch.stack(torch._foreach_norm([p.grad for _, p in with_grad])).double()
            record["grad_norms"] = dict(zip((n for n, _ in with_grad), norms.tolist()))
            record["grad_norm_total"] = float(norms.norm())
        cfg = self.config
        if cfg.max_grad_norm is not None and with_grad:
            if cfg.clip_mode == "global":
                total = torch.nn.utils.clip_grad_norm_([p for _, p in with_grad], cfg.max_grad_norm)
                if self.scaler is None and not torch.isfinite(total):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._stop_non_finite("gradient norm", float(total))
            else:
                for _, p in with_grad:
                    torch.nn.utils.clip_grad_norm_([p], cfg.max_grad_norm)
        record["lr"] = self.optimizer.param_groups[0]["lr"]  # the rate this update uses
        if log_now and len(self.optimizer.param_groups) > 1:  # e.g. mask scores at their own rate
            record["lr_groups"] = {str(g.get("name", i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._window_loss += loss_sum
        self._window_steps += 1
        return record

    def _stop_for_signal(self) -> None:
        saved = None
        if self.checkpoints:
            if self._checkpointed_step != self.global_step:
                self.save_checkpoint()
            saved = self.checkpoint_path
        interrupted = TrainingInterrupted(self._stop_signal, self.global_step, saved)
        self.logger.log({"type": "event", "step": self.global_step, "event": "stopped", "message": str(interrupted)})
        raise interrupted

    # evaluation ---------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        if self.evaluate_fn is None:
            return None
        metrics = None
        if self.is_main:
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad(), self._autocast():
                    metrics = {k: float(v) for k, v in self.evaluate_fn(self.model).items()}
            finally:
                self.model.train(was_training)
        return dist_utils.broadcast_object(metrics)

    def _after_eval(self, metrics: dict[str, float]) -> None:
        self.last_metrics = metrics
        self.logger.log({"type": "eval", "step": self.global_step, "epoch": self.epoch, **metrics})
        name = self.config.best_metric
        if name is None:
            return
        if name not in metrics:
            raise ValueError(f"best_metric {name!r} is not among the evaluation metrics {sorted(metrics)}")
        if self.global_step < self.config.select_best_after * self.total_steps:
            return
        value = metrics[name]
        if not is_new_best(value, self.best_value, ties="earlier", greater_is_better=self.config.greater_is_better):
            return
        self.best_value, self.best_step, self.best_metrics = value, self.global_step, dict(metrics)
        if self.config.save_best_model and self.is_main:
            atomic_torch_save(self.model.state_dict(), os.path.join(self.config.output_dir, "best_model.pt"))
        if self.is_main:
            best = {"step": self.global_step, "metric": name, "value": value, "metrics": metrics}
            write_text_atomic(os.path.join(self.config.output_dir, "best.json"), json.dumps(best, indent=2))

    # the loop -----------------------------------------------------------------------------------
    def train(self, resume: bool = True) -> dict[str, Any]:
        """Train to `total_steps` (continuing from `<output_dir>/checkpoint.pt` when resume and it exists)."""
        cfg = self.config
        set_seed(cfg.seed + self.rank)
        if self.is_main:
            remove_stale_temporaries(cfg.output_dir)  # this run is the folder's one writer
        self._resume_or_start(resume)
        self._stop_signal = None
        self._last_checkpoint_time = time.monotonic()
        if cfg.eval_at_start and self.global_step == 0:
            metrics = self.evaluate()
            if metrics is not None:
                self._after_eval(metrics)
        self.model.train()
        progress = progress_bar(self.total_steps, initial=self.global_step, disable=not (cfg.progress and self.is_main),
                                desc=os.path.basename(os.path.normpath(cfg.output_dir)) or "train", unit="step")
        handlers = contextlib.ExitStack()
        handlers.enter_context(self._stop_signal_handlers())
        try:
            while self.global_step < self.total_steps:
                updates = self.epoch_updates(self.epoch)
                while self.update_in_epoch < len(updates) and self.global_step < self.total_steps:
                    log_now = (self.global_step + 1) % cfg.log_every == 0 or self.global_step + 1 == self.total_steps
                    record = self._train_step(updates[self.update_in_epoch], log_now)
                    self.global_step += 1
                    self.update_in_epoch += 1
                    if self.step_callback is not None:
                        self.step_callback(self, self.global_step)
                    if log_now:
                        if self._masked_layers:  # after step_callback: the mask the next step uses
                            record["sparsity"] = _masked_sparsity(self._masked_layers)
                        loss = float(self._window_loss) / max(1, self._window_steps)
                        self._window_loss.zero_()
                        self._window_steps = 0
                        self.logger.log({"type": "train", "step": self.global_step, "epoch": self.epoch,
                                         "loss": loss, **record})
                        progress.set_postfix(loss=f"{loss:.4f}")
                    progress.update(1)
                    finished = self.global_step == self.total_steps
                    epoch_done = self.update_in_epoch == len(updates)
                    if ((cfg.eval_every and self.global_step % cfg.eval_every == 0) or finished
                            or (cfg.eval_at_epoch_end and epoch_done)):
                        metrics = self.evaluate()
                        if metrics is not None:
                            self._after_eval(metrics)
                    if epoch_done:
                        self.epoch, self.update_in_epoch = self.epoch + 1, 0
                    stop, due = self._stop_and_checkpoint_due()
                    if (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0) or (
                            finished and cfg.checkpoint_at_end) or (due and not finished):
                        self.save_checkpoint()
                    if stop and not finished:
                        self._stop_for_signal()
                    if epoch_done:
                        break  # the next epoch has its own permutation
        finally:
            handlers.close()
            progress.close()
            self.logger.close()  # flushes TensorBoard / W&B; a later log call reopens the same run
        self.logger.log({"type": "event", "step": self.global_step, "event": "finished"})
        return {"global_step": self.global_step, "total_steps": self.total_steps,
                "final_metrics": self.last_metrics, "best_metric": cfg.best_metric, "best_value": self.best_value,
                "best_step": self.best_step, "best_metrics": self.best_metrics}
