"""Where a run's scalars go besides its JSONL log: nowhere, TensorBoard or Weights & Biases.

    --report-to none          the JSONL log only (default)
    --report-to tensorboard   event files in <run_dir>/tensorboard (pip install tensorboard)
    --report-to wandb         a W&B run (pip install wandb); WANDB_MODE=offline works without
                              a network (sync later with `wandb sync`), WANDB_PROJECT names the project

The JSONL log (log.jsonl) is always written; reporters receive the same records as scalars:
train records -> train/loss, train/lr (the first group's rate), train/lr/<group> (every group's rate),
train/grad_norm (total), train/grad_norm/<parameter>, train/sparsity (masked models), and eval
records -> eval/<metric>. A resumed run continues the same TensorBoard folder (events after the
resumed step are dropped, as in the JSONL log) and the same W&B run (its id is kept in
<run_dir>/wandb_run_id).

`add_report_to_argument(parser)` adds the flag to any experiment's argparse parser.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import uuid
from typing import Any

from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError

__all__ = ["REPORT_TO", "add_report_to_argument", "check_report_to", "make_reporter", "scalars_of",
           "TensorBoardReporter", "WandbReporter"]

REPORT_TO = ("none", "tensorboard", "wandb")
_PACKAGES = {"tensorboard": ("tensorboard", "maskedbert[tensorboard]"), "wandb": ("wandb", "maskedbert[wandb]")}
WANDB_ID_FILE = "wandb_run_id"


def add_report_to_argument(parser: argparse.ArgumentParser, dest: str = "report_to", default: str | None = None):
    """Add `--report-to {none,tensorboard,wandb}` to `parser` (default None: the config's value)."""
    return parser.add_argument(
        "--report-to", dest=dest, choices=REPORT_TO, default=default,
        help="also send loss, learning rates, sparsity, grad norms and eval metrics to TensorBoard "
             "(<out>/tensorboard) or Weights & Biases; the JSONL log is always written")


def check_report_to(value: Any, what: str = "report_to") -> str:
    """`value` if it is a known reporter whose package is installed, else a UsageError saying what to do."""
    if value not in REPORT_TO:
        raise UsageError(f"{what}: unknown reporter {value!r}; choose one of: {', '.join(REPORT_TO)}")
    if value in _PACKAGES:
        module, extra = _PACKAGES[value]
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"{what}={value!r} needs the {module} package: pip install {module} (or {extra})")
    return value


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The scalars a reporter shows for one log record (see the module docstring for the names)."""
    kind = record.get("type")
    if kind not in ("train", "eval"):
        return {}
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("type", "step", "epoch") or isinstance(value, bool):
            continue
        if kind == "eval":
            name = f"eval/{key}"
        else:
            name = {"grad_norm_total": "train/grad_norm", "grad_norms": "train/grad_norm",
                    "lr_groups": "train/lr"}.get(key, f"train/{key}")
        if isinstance(value, dict):
            out.update({f"{name}/{k}": float(v) for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            out[name] = float(value)
    if kind == "train" and "epoch" in record and _is_number(record["epoch"]):
        out["train/epoch"] = float(record["epoch"])
    return out


def make_reporter(kind: str, run_dir: str, *, resume_step: int | None = None, continue_run: bool = False,
                  run_config: dict | None = None, run_name: str | None = None):
    """A reporter for `kind` (None for "none"). resume_step: the step a resumed run continues after
    (later events are dropped); continue_run: append to the run this process reported to before."""
    check_report_to(kind)
    if kind == "tensorboard":
        return TensorBoardReporter(run_dir, resume_step)
    if kind == "wandb":
        return WandbReporter(run_dir, resume=resume_step is not None or continue_run, run_config=run_config,
                             run_name=run_name)
    return None


class TensorBoardReporter:
    def __init__(self, run_dir: str, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events an interrupted run wrote after the step it resumes from
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=purge)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbReporter:
    def __init__(self, run_dir: str, *, resume: bool = False, run_config: dict | None = None,
                 run_name: str | None = None):
        import wandb

        id_path = os.path.join(run_dir, WANDB_ID_FILE)
        run_id = None
        if resume and os.path.isfile(id_path):
            with open(id_path, encoding="utf-8") as f:
                run_id = f.read().strip() or None
        if run_id is None:
            run_id = uuid.uuid4().hex[:12]
            write_text_atomic(id_path, run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "maskedbert"), id=run_id, resume="allow",
                              dir=run_dir, name=run_name or os.path.basename(os.path.normpath(run_dir)),
                              config=run_config or {})

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
