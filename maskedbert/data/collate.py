"""Tokenize examples once, then pad per batch.

    dataset = encode_examples(examples, tokenizer, max_length=128, label_map=label_mapping(...))
    batch = PadCollator(tokenizer.pad_token_id)([dataset[i] for i in range(16)])
    # batch: input_ids, attention_mask, token_type_ids (when the tokenizer makes them), labels,
    #        example_index (LongTensor), example_ids (list of str), and any extra per-example tensors

Extra per-example fields (bias-model probabilities, teacher probabilities) ride along through
`EncodedDataset.with_fields(name=tensor[n, ...])`; the collator stacks them into the batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from maskedbert.choices import SEGMENT_IDS

from .examples import UNLABELED, Example

__all__ = ["EncodedDataset", "encode_examples", "PadCollator", "SEGMENT_IDS"]


class EncodedDataset(torch.utils.data.Dataset):
    """Token ids, labels and ids of a list of examples (a map-style torch Dataset)."""

    def __init__(self, input_ids: list[list[int]], token_type_ids: list[list[int]] | None, labels: Sequence,
                 example_ids: Sequence[str], is_regression: bool = False,
                 extra_fields: dict[str, torch.Tensor] | None = None):
        n = len(input_ids)
        if len(labels) != n or len(example_ids) != n or (token_type_ids is not None and len(token_type_ids) != n):
            raise ValueError("input_ids, token_type_ids, labels and example_ids must have the same length")
        self.input_ids, self.token_type_ids = input_ids, token_type_ids
        self.labels = list(labels)
        self.example_ids = list(example_ids)
        self.is_regression = is_regression
        self.extra_fields = dict(extra_fields or {})
        for name, values in self.extra_fields.items():
            if len(values) != n:
                raise ValueError(f"extra field {name!r} has {len(values)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"input_ids": self.input_ids[index], "label": self.labels[index],
                "example_id": self.example_ids[index], "example_index": index,
                "is_regression": self.is_regression}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        for name, values in self.extra_fields.items():
            item[name] = values[index]
        return item

    def with_fields(self, **fields: torch.Tensor) -> "EncodedDataset":
        """A copy with more per-example tensors (first dimension = number of examples)."""
        merged = {**self.extra_fields, **{k: torch.as_tensor(v) for k, v in fields.items()}}
        return EncodedDataset(self.input_ids, self.token_type_ids, self.labels, self.example_ids,
                              self.is_regression, merged)

    def subset(self, indices: Sequence[int]) -> "EncodedDataset":
        indices = list(indices)
        pick = lambda seq: [seq[i] for i in indices]  # noqa: E731
        return EncodedDataset(pick(self.input_ids), pick(self.token_type_ids) if self.token_type_ids else None,
                              pick(self.labels), pick(self.example_ids), self.is_regression,
                              {k: v[indices] for k, v in self.extra_fields.items()})



def encode_examples(examples: Sequence[Example], tokenizer, max_length: int = 128,
                    label_map: Sequence[int] | None = None, is_regression: bool = False,
                    batch_size: int = 1000, segment_ids: str = "tokenizer") -> EncodedDataset:
    """Tokenize (text_a, text_b) pairs with a Hugging Face tokenizer, truncating to `max_length`.

    label_map[i] is the model's index for dataset label i (metrics.label_mapping); UNLABELED stays.
    segment_ids: "tokenizer" sends the token_type_ids the tokenizer makes (0 for the first text, 1 for
    the second); "none" sends none, so the model uses all-zero segment ids (what
    uds-lsv/bert-stable-fine-tuning does for its pooler-* models, run_finetuning.py:307-310).
    """
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    if segment_ids not in SEGMENT_IDS:
        raise ValueError(f"segment_ids must be one of {SEGMENT_IDS}, got {segment_ids!r}")
    examples = list(examples)
    if any(not isinstance(e, Example) for e in examples):
        raise TypeError("examples must be a sequence of maskedbert.data.Example")
    pairs = [e.text_b is not None for e in examples]
    if examples and any(pairs) != all(pairs):
        raise ValueError("examples mix single sentences and sentence pairs")
    input_ids: list[list[int]] = []
    token_type_ids: list[list[int]] | None = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        texts_b = [e.text_b for e in chunk] if chunk and chunk[0].text_b is not None else None
        encoded = tokenizer([e.text_a for e in chunk], texts_b, truncation=True, max_length=max_length,
                            padding=False)
        input_ids.extend(list(ids) for ids in encoded["input_ids"])
        if segment_ids == "tokenizer" and "token_type_ids" in encoded and token_type_ids is not None:
            token_type_ids.extend(list(t) for t in encoded["token_type_ids"])
        else:
            token_type_ids = None
    labels = []
    for e in examples:
        if is_regression or e.label == UNLABELED or label_map is None:
            labels.append(e.label)
        else:
            labels.append(label_map[int(e.label)])
    return EncodedDataset(input_ids, token_type_ids if examples else None, labels, [e.id for e in examples],
                          is_regression)


class PadCollator:
    """Pads a list of EncodedDataset items to the longest one (or to `pad_to_multiple_of`)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id must be an int (the tokenizer has no pad token)")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        length = max(len(item["input_ids"]) for item in items)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(items)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        has_types = "token_type_ids" in items[0]
        token_type_ids = torch.zeros((n, length), dtype=torch.long) if has_types else None
        for row, item in enumerate(items):
            ids = item["input_ids"]
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
            if has_types:
                token_type_ids[row, :len(ids)] = torch.tensor(item["token_type_ids"], dtype=torch.long)
        label_dtype = torch.float32 if items[0].get("is_regression") else torch.long
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([item["label"] for item in items], dtype=label_dtype),
            "example_index": torch.tensor([item["example_index"] for item in items], dtype=torch.long),
            "example_ids": [item["example_id"] for item in items],
        }
        if has_types:
            batch["token_type_ids"] = token_type_ids
        standard = {"input_ids", "token_type_ids", "label", "example_id", "example_index", "is_regression"}
        for name in items[0]:
            if name not in standard:
                batch[name] = torch.stack([torch.as_tensor(item[name]) for item in items])
        return batch
