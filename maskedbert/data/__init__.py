"""Task registry and datasets (real tasks through `datasets`, imported lazily; offline synthetic tasks).

    from maskedbert.data import get_task, load_examples, encode_examples, PadCollator
"""
from .collate import EncodedDataset, PadCollator, encode_examples
from .examples import UNLABELED, Example
from .synthetic import synthetic_pair_examples, synthetic_pair_vocabulary
from .tasks import TASKS, TaskSpec, get_task, list_tasks, load_examples, register_task

__all__ = [
    "Example", "UNLABELED", "TaskSpec", "TASKS", "register_task", "get_task", "list_tasks", "load_examples",
    "EncodedDataset", "encode_examples", "PadCollator", "synthetic_pair_examples", "synthetic_pair_vocabulary",
]
