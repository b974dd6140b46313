"""Training engine: Trainer loop, optimizer, schedules, checkpoints (API documented in trainer.py).

The names below load on first use (PEP 562), so light submodules such as train.reporting (imported
by the commands' parsers) do not pull in torch: `--help` stays fast."""
import importlib

_WHERE = {"make_evaluator": "evaluator", "predict": "evaluator", "build_schedule": "schedules",
          "Trainer": "trainer", "TrainConfig": "trainer", "NonFiniteLossError": "trainer",
          "default_forward": "trainer", "default_loss": "trainer", "set_seed": "trainer"}

__all__ = ["Trainer", "TrainConfig", "NonFiniteLossError", "make_evaluator", "predict", "build_schedule",
           "set_seed", "default_forward", "default_loss"]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WHERE))
