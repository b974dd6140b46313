"""Training engine: Trainer loop, optimizer, schedules, checkpoints (API documented in trainer.py)."""
from .evaluation import make_evaluator, predict
from .schedules import build_schedule
from .trainer import NonFiniteLossError, TrainConfig, Trainer, default_forward, default_loss, set_seed

__all__ = ["Trainer", "TrainConfig", "NonFiniteLossError", "make_evaluator", "predict", "build_schedule",
           "set_seed", "default_forward", "default_loss"]
