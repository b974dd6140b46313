"""Where a run's scalars go besides its JSONL log: nowhere, TensorBoard, Weights & Biases, or both.

    --report-to none               the JSONL log only (default)
    --report-to tensorboard        event files in <run_dir>/tensorboard (pip install tensorboard)
    --report-to wandb              a W&B run (pip install wandb); WANDB_MODE=offline works without
                                   a network (sync later with `wandb sync`), WANDB_PROJECT names the project
    --report-to tensorboard wandb  several at once (also "tensorboard,wandb"; the value is kept in that
                                   comma-joined form, which TrainConfig.report_to accepts too)

W&B runs of a study (a run folder inside a folder holding sweep.json, maskedbert.sweep) share the
group = the study folder's name and are named by their cell (the run folder's path inside the study,
e.g. "lr_2e-5/seed_3"), so a study's seeds sit together in the W&B UI; WANDB_RUN_GROUP and an explicit
run name take precedence.

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

__all__ = ["REPORT_TO", "add_report_to_argument", "check_report_to", "parse_report_to", "make_reporter",
           "scalars_of", "TensorBoardReporter", "WandbReporter", "MultiReporter", "wandb_group_and_name"]

REPORT_TO = ("none", "tensorboard", "wandb")
STUDY_FILE = "sweep.json"  # marks a study folder (maskedbert.sweep.study.STUDY_FILE; not imported: layering)
_PACKAGES = {"tensorboard": ("tensorboard", "pip install -e '.[tensorboard]'"), "wandb": ("wandb", "pip install -e '.[wandb]'")}
WANDB_ID_FILE = "wandb_run_id"


class _ReportToAction(argparse.Action):
    """Collects `--report-to a b` and `--report-to a,b` into one comma-joined, checked value."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, parse_report_to(values))
        except UsageError as err:
            parser.error(f"{option_string}: {err}")


def add_report_to_argument(parser: argparse.ArgumentParser, dest: str = "report_to", default: str | None = None):
    """Add `--report-to NAME [NAME ...]` (none, tensorboard, wandb) to `parser` (default None: the config's value)."""
    return parser.add_argument(
        "--report-to", dest=dest, nargs="+", action=_ReportToAction, default=default,
        metavar="{none,tensorboard,wandb}",
        help="also send loss, learning rates, sparsity, grad norms and eval metrics to TensorBoard "
             "(<out>/tensorboard) and/or Weights & Biases; several at once: --report-to tensorboard wandb; "
             "the JSONL log is always written")


def parse_report_to(value: Any) -> str:
    """One reporter name, several (a list, or names joined by commas) -> the checked comma-joined form
    ("none" alone, or e.g. "tensorboard,wandb" in REPORT_TO order). Packages are not checked here."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise UsageError(f"report_to must be a reporter name or a list of them, got {value!r}")
    names = [part.strip() for item in items for part in item.split(",") if part.strip()]
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown or not names:
        raise UsageError(f"unknown reporter {(unknown or [value])[0]!r}; choose from: {', '.join(REPORT_TO)}")
    chosen = set(names) - {"none"}
    if "none" in names and chosen:
        raise UsageError(f"report_to {value!r} combines 'none' with {sorted(chosen)}")
    return ",".join(n for n in REPORT_TO if n in chosen) or "none"


def check_report_to(value: Any, what: str = "report_to") -> str:
    """`value` (one reporter or several, see parse_report_to) if every reporter is known and its package
    installed; else a UsageError saying what to do. Returns the comma-joined form."""
    try:
        value = parse_report_to(value)
    except UsageError as err:
        raise UsageError(f"{what}: {err}") from None
    for name in value.split(","):
        if name in _PACKAGES:
            module, extra = _PACKAGES[name]
            if importlib.util.find_spec(module) is None:
                raise UsageError(f"{what}={name!r} needs the {module} package: pip install {module} (or, in a maskedbert clone, {extra})")
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
    """A reporter for `kind` (None for "none"; a MultiReporter for several). resume_step: the step a
    resumed run continues after (later events are dropped); continue_run: append to the run this
    process reported to before."""
    reporters = []
    for name in check_report_to(kind).split(","):
        if name == "tensorboard":
            reporters.append(TensorBoardReporter(run_dir, resume_step))
        elif name == "wandb":
            reporters.append(WandbReporter(run_dir, resume=resume_step is not None or continue_run,
                                           run_config=run_config, run_name=run_name))
    if not reporters:
        return None
    return reporters[0] if len(reporters) == 1 else MultiReporter(reporters)


class MultiReporter:
    """Sends every call to each reporter in turn."""

    def __init__(self, reporters: list):
        self.reporters = list(reporters)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for reporter in self.reporters:
            reporter.log(scalars, step)

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()


def wandb_group_and_name(run_dir: str) -> tuple[str | None, str]:
    """(group, name) for a W&B run in `run_dir`: inside a study, the study folder's name and the run
    folder's path within it; elsewhere no group and the folder's own name."""
    run_dir = os.path.abspath(run_dir)
    folder = os.path.dirname(run_dir)
    while True:
        if os.path.isfile(os.path.join(folder, STUDY_FILE)):
            return os.path.basename(folder), os.path.relpath(run_dir, folder).replace(os.sep, "/")
        parent = os.path.dirname(folder)
        if parent == folder:
            return None, os.path.basename(run_dir)
        folder = parent


class TensorBoardReporter:
    def __init__(self, run_dir: str, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # optional dependency (tensorboard)

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
        import wandb  # optional dependency

        id_path = os.path.join(run_dir, WANDB_ID_FILE)
        run_id = None
        if resume and os.path.isfile(id_path):
            with open(id_path, encoding="utf-8") as f:
                run_id = f.read().strip() or None
        if run_id is None:
            run_id = uuid.uuid4().hex[:12]
            write_text_atomic(id_path, run_id + "\n")
        group, name = wandb_group_and_name(run_dir)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "maskedbert"), id=run_id, resume="allow",
                              dir=run_dir, name=run_name or name, group=os.environ.get("WANDB_RUN_GROUP") or group,
                              config=run_config or {})

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
