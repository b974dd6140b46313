"""Run logging: JSON lines in the run directory, optional TensorBoard (skipped when not installed)."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any
from maskedbert._atomic import write_text_atomic

__all__ = ["RunLogger", "read_jsonl"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunLogger:
    """Appends one JSON object per event to `<run_dir>/<name>`; mirrors scalars to TensorBoard if asked.

    On resume the log is truncated to records at or before the resumed step, so a resumed run's log
    reads like an uninterrupted one.
    """

    def __init__(self, run_dir: str, name: str = "log.jsonl", tensorboard: bool = False, enabled: bool = True):
        self.path = os.path.join(run_dir, name)
        self.enabled = enabled
        self._tb = None
        if enabled:
            os.makedirs(run_dir, exist_ok=True)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))
            except ImportError:
                print("maskedbert: tensorboard is not installed; logging to JSONL only", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")
        if self._tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
