"""The Trainer's evaluator: predictions and metrics over an encoded dev set (`make_evaluator` builds the
Trainer's evaluate_fn). Out-of-distribution evaluation (HANS, PAWS, FEVER-Symmetric) is maskedbert.evaluation."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from maskedbert.metrics import compute_metrics

from .trainer import default_forward

__all__ = ["predict", "make_evaluator"]


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, collate_fn: Callable, batch_size: int = 64,
            forward_fn: Callable | None = None) -> dict[str, Any]:
    """Logits [n, num_labels] (fp32, CPU), labels and example ids of `dataset`, in dataset order."""
    forward_fn = forward_fn or default_forward
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, labels, ids = [], [], []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate_fn([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            logits.append(forward_fn(model, inputs).float().cpu())
            labels.append(batch["labels"])
            ids.extend(batch.get("example_ids", []))
    finally:
        model.train(was_training)
    return {"logits": torch.cat(logits), "labels": torch.cat(labels), "example_ids": ids}


def make_evaluator(dataset, collate_fn: Callable, metric_names: Sequence[str], *, batch_size: int = 64,
                   prefix: str = "", forward_fn: Callable | None = None) -> Callable[[torch.nn.Module], dict[str, float]]:
    """evaluate(model) -> {prefix + metric: value} on `dataset` (argmax for classes, the scalar for regression)."""
    metric_names = list(metric_names)
    compute_metrics(metric_names, [0], [0])  # fail now on unknown metric names, not mid-training

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        out = predict(model, dataset, collate_fn, batch_size, forward_fn)
        logits = out["logits"]
        preds = logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)
        values = compute_metrics(metric_names, preds.numpy(), out["labels"].numpy())
        return {prefix + k: v for k, v in values.items()}

    return evaluate
