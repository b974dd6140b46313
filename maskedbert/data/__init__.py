"""Task registry and datasets (real tasks through `datasets`, imported lazily; offline synthetic tasks).

    from maskedbert.data import get_task, load_examples, encode_examples, PadCollator
"""
from .examples import UNLABELED, Example
from .synthetic import synthetic_pair_examples, synthetic_pair_vocabulary
from .tasks import TASKS, TaskSpec, get_task, list_tasks, load_examples, register_task

# The encoding helpers need torch; they load on first use so that the task registry (which the
# command line reads to list and check --task before anything heavy) stays torch-free.
_LAZY_FROM_COLLATE = ("EncodedDataset", "PadCollator", "encode_examples")

__all__ = [
    "Example", "UNLABELED", "TaskSpec", "TASKS", "register_task", "get_task", "list_tasks", "load_examples",
    "EncodedDataset", "encode_examples", "PadCollator", "synthetic_pair_examples", "synthetic_pair_vocabulary",
]


def __getattr__(name: str):
    if name in _LAZY_FROM_COLLATE:
        from . import collate  # keeps --help torch-free: collate imports torch

        return getattr(collate, name)
    raise AttributeError(f"module 'maskedbert.data' has no attribute {name!r}")
