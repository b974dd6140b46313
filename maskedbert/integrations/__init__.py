"""Use maskedbert from a plain Hugging Face training script (transformers.Trainer).

- `MaskTrainingCallback`: cubic sparsity schedule, threshold reset or exact top-k, masks in every checkpoint.
- `mask_training_param_groups` / `build_optimizer`: scores at their own learning rate, no decay on them.
- `MaskCheckpointCallback`: lets the Trainer checkpoint a masked model (fixed masks, IMP), masks beside each.
- `IMPRounds`: prune / rewind between `trainer.train()` rounds.
See examples/hf_trainer_mask_training.py. Importing this package imports transformers.
"""
from .hf_trainer import (MASKS_NAME, MaskCheckpointCallback, MaskTrainingCallback, build_optimizer,
                         mask_training_param_groups)
from .imp import IMPRounds

__all__ = ["MaskTrainingCallback", "MaskCheckpointCallback", "mask_training_param_groups", "build_optimizer",
           "IMPRounds", "MASKS_NAME"]
