"""Use maskedbert from a plain Hugging Face training script (transformers.Trainer).

- `MaskTrainer` / `MaskTrainerMixin`: the optimizer args.optim names over maskedbert's groups (scores at
  `lr_scores`), mask statistics and per-group learning rates through Trainer.log, debiasing losses.
- `MaskTrainingCallback`: cubic sparsity schedule, threshold reset or exact top-k, masks in every checkpoint.
- `DebiasLoss`: product of experts, reweighting or confidence regularization from probabilities keyed by id.
- `mask_optimizer_cls_and_kwargs` / `build_optimizer` / `mask_training_param_groups`: the same optimizer for
  a plain Trainer (`optimizer_cls_and_kwargs=` or `optimizers=`).
- `MaskCheckpointCallback`: lets the Trainer checkpoint a masked model (fixed masks, IMP), masks beside each.
- `IMPRounds`: prune / rewind between `trainer.train()` rounds.
See examples/hf_trainer_mask_training.py and docs/HUGGINGFACE.md. Importing this package imports transformers.
"""
from .debias import DebiasLoss
from .hf_trainer import (MASKS_NAME, MaskCheckpointCallback, MaskOptimizerFactory, MaskTrainingCallback,
                         build_optimizer, check_optimizer_trains_scores, mask_optimizer_cls_and_kwargs,
                         mask_training_param_groups)
from .imp import IMPRounds
from .trainer import MaskTrainer, MaskTrainerMixin

__all__ = ["MaskTrainer", "MaskTrainerMixin", "MaskTrainingCallback", "MaskCheckpointCallback", "DebiasLoss",
           "mask_training_param_groups", "build_optimizer", "mask_optimizer_cls_and_kwargs", "MaskOptimizerFactory",
           "check_optimizer_trains_scores", "IMPRounds", "MASKS_NAME"]
