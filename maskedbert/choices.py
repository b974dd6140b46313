"""Names and choice lists shared by the command-line parsers and the code that acts on them.

This module imports nothing heavy (no torch): `maskedbert <command> --help` builds its parsers from it,
and the modules that implement each choice import the same tuples, so the two cannot drift apart.
"""
from __future__ import annotations

# maskedbert.pruning.sparsity: how a score mask is held at its target sparsity
SPARSITY_METHODS = ("threshold_reset", "exact_topk")
# maskedbert.pruning.selection: which mask a mask-training run keeps
SELECT_MODES = ("best", "last")
# maskedbert.pruning.schedules: what an IMP round's pruning fraction is a fraction of
AMOUNT_OF = ("original", "remaining")
# maskedbert.train.schedules: the learning rate after warmup (linear decay to 0, or constant)
SCHEDULE_NAMES = ("linear", "constant")
# maskedbert.train.trainer: gradient clipping over all parameters at once, or each on its own
CLIP_MODES = ("global", "per_parameter")
# maskedbert.train.schedules: how warmup_ratio * steps becomes whole steps ("floor": the reference's int())
WARMUP_ROUNDING_NAMES = ("floor", "ceil")
# maskedbert.data.collate: token_type_ids of sentence pairs from the tokenizer, or none sent
SEGMENT_IDS = ("tokenizer", "none")
