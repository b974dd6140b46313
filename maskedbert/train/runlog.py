"""Run logging: JSON lines in the run directory, plus TensorBoard or Weights & Biases when asked
(maskedbert.train.reporting)."""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

from maskedbert._atomic import write_text_atomic

from .reporting import check_report_to, make_reporter, scalars_of

__all__ = ["RunLogger", "read_jsonl", "CorruptLogError"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunLogger:
    """Appends one JSON object per event to `<run_dir>/<name>`; sends its scalars to `report_to` too.

    report_to: "none", "tensorboard" or "wandb" (`tensorboard=True` is the older spelling of
    report_to="tensorboard"). The reporter starts at the first record, so a resumed run (after
    `truncate_after(step)`) continues the same TensorBoard folder / W&B run. On resume the log is
    truncated to records at or before the resumed step, so a resumed run's log reads like an
    uninterrupted one.
    """

    def __init__(self, run_dir: str, name: str = "log.jsonl", tensorboard: bool = False, enabled: bool = True,
                 report_to: str = "none", run_config: dict | None = None, run_name: str | None = None):
        if tensorboard and report_to == "none":
            report_to = "tensorboard"
        self.report_to = check_report_to(report_to)
        self.run_dir, self.path = run_dir, os.path.join(run_dir, name)
        self.enabled = enabled
        self.run_config, self.run_name = run_config, run_name
        self._reporter = None
        self._resume_step: int | None = None
        self._reopened = False  # closed once already: the next reporter continues the same run
        if enabled:
            os.makedirs(run_dir, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if step >= 0:
            self._resume_step = step
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")
        scalars = scalars_of(record) if self.report_to != "none" and "step" in record else {}
        if scalars:
            if self._reporter is None:
                self._reporter = make_reporter(self.report_to, self.run_dir, resume_step=self._resume_step,
                                               continue_run=self._reopened, run_config=self.run_config,
                                               run_name=self.run_name)
            self._reporter.log(scalars, int(record["step"]))

    def close(self) -> None:
        """Flush and close the reporter (a later record starts it again, continuing the same run)."""
        if self._reporter is not None:
            self._reporter.close()
            self._reporter = None
            self._resume_step, self._reopened = None, True


class CorruptLogError(ValueError):
    """A line before the last one of a JSONL log is not JSON: the file was changed by something else."""


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL log. A last line that is not whole JSON (the writer was killed or the disk
    filled mid-line) is dropped with a warning naming the file; a bad line before it raises CorruptLogError."""
    path = os.fspath(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a {type(record).__name__}, not an object")
        except ValueError as err:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: dropped a torn last line (line {number}: {err})", RuntimeWarning,
                              stacklevel=2)
                break
            raise CorruptLogError(f"{path}: line {number} is not a JSON record ({err})") from None
        records.append(record)
    return records
