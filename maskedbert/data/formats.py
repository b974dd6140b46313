"""Readers for tasks' original distribution formats: GLUE TSV, HANS txt, PAWS tsv, FEVER jsonl.

Each reader turns one file into a list of Examples with stable ids (the file's own id column where
it has one, else `<task>-<split>-<row>`). Labels given as names are mapped through `label_names`.
"""
from __future__ import annotations

import ast
import csv
import json
import os
import sys
from typing import Sequence

from .examples import UNLABELED, Example

__all__ = ["read_tsv_rows", "read_glue_tsv", "read_hans_txt", "read_paws_tsv", "read_fever_jsonl"]


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")


def read_tsv_rows(path: str) -> list[list[str]]:
    """Rows of a tab-separated file without quote handling (GLUE's files contain bare quotes)."""
    _check_file(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _label_index(value: str, label_names: Sequence[str], path: str, row_number: int) -> int | float:
    value = value.strip()
    if not label_names:  # regression
        return float(value)
    if value in label_names:
        return label_names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(label_names):
        return int(value)
    raise ValueError(f"{path}: row {row_number}: label {value!r} is not one of {list(label_names)}")


def read_glue_tsv(
    path: str,
    *,
    task: str,
    split: str,
    text_a: str | int,
    text_b: str | int | None,
    label: str | int | None,
    label_names: Sequence[str],
    id_column: str | int | None = None,
    has_header: bool = True,
) -> list[Example]:
    """A GLUE-style TSV; columns named by header (str) or position (int). Test files lack the label column.

    Rows with too few columns (a handful of malformed QQP lines) are skipped with a count on stderr.
    """
    rows = read_tsv_rows(path)
    header: list[str] = rows[0] if has_header and rows else []
    body = rows[1:] if has_header else rows

    def column(spec):
        if spec is None or isinstance(spec, int):
            return spec
        if spec not in header:
            return None
        return header.index(spec)

    ia, ib, il, iid = column(text_a), column(text_b), column(label), column(id_column)
    if ia is None:
        raise ValueError(f"{path}: no column {text_a!r} in header {header}")
    if text_b is not None and ib is None:
        raise ValueError(f"{path}: no column {text_b!r} in header {header}")
    needed = max(i for i in (ia, ib, il, iid) if i is not None)
    examples, skipped = [], 0
    for row_number, row in enumerate(body):
        if len(row) <= needed:
            skipped += 1
            continue
        label_value = UNLABELED if il is None else _label_index(row[il], label_names, path, row_number)
        example_id = row[iid] if iid is not None else str(row_number)
        examples.append(Example(
            id=f"{task}-{split}-{example_id}",
            text_a=row[ia],
            text_b=row[ib] if ib is not None else None,
            label=label_value,
        ))
    if skipped:
        print(f"maskedbert.data: skipped {skipped} malformed rows in {path}", file=sys.stderr)
    return examples


HANS_LABELS = ("entailment", "non-entailment")


def read_hans_txt(path: str, *, task: str = "hans", split: str = "validation") -> list[Example]:
    """HANS heuristics_{train,evaluation}_set.txt: keeps heuristic, subcase and template per example."""
    rows = read_tsv_rows(path)
    if not rows:
        return []
    header = rows[0]
    required = ("gold_label", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: HANS header lacks columns {missing}")
    col = {name: header.index(name) for name in required}
    examples = []
    for row_number, row in enumerate(rows[1:]):
        if len(row) < len(header):
            continue
        examples.append(Example(
            id=f"{task}-{split}-{row[col['pairID']]}",
            text_a=row[col["sentence1"]],
            text_b=row[col["sentence2"]],
            label=_label_index(row[col["gold_label"]], HANS_LABELS, path, row_number),
            meta={k: row[col[k]] for k in ("heuristic", "subcase", "template")},
        ))
    return examples


def _strip_bytes_literal(text: str) -> str:
    # PAWS-QQP's generation script writes Python bytes reprs (b'...') into the TSV
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        try:
            return ast.literal_eval(text).decode("utf-8")
        except (ValueError, SyntaxError, UnicodeDecodeError):
            return text[2:-1]
    return text


def read_paws_tsv(path: str, *, task: str, split: str) -> list[Example]:
    """PAWS-Wiki / PAWS-QQP TSV with columns id, sentence1, sentence2, label (0/1)."""
    rows = read_tsv_rows(path)
    if not rows:
        return []
    header = rows[0]
    for name in ("id", "sentence1", "sentence2", "label"):
        if name not in header:
            raise ValueError(f"{path}: PAWS header lacks column {name!r}: {header}")
    i_id, ia, ib, il = (header.index(n) for n in ("id", "sentence1", "sentence2", "label"))
    return [
        Example(
            id=f"{task}-{split}-{row[i_id]}",
            text_a=_strip_bytes_literal(row[ia]),
            text_b=_strip_bytes_literal(row[ib]),
            label=int(row[il]),
        )
        for row in rows[1:]
        if len(row) >= len(header)
    ]


FEVER_LABELS = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")


def read_fever_jsonl(path: str, *, task: str, split: str) -> list[Example]:
    """FEVER claim/evidence pairs in JSON lines (the NLI-style FEVER files and FEVER-Symmetric v1/v2).

    Field names differ between releases: evidence is "evidence" or "evidence_sentence", the label
    "gold_label" or "label"; ids come from "id" (or "unique_id") else the line number.
    """
    _check_file(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f):
            if not line.strip():
                continue
            record = json.loads(line)
            evidence = record.get("evidence", record.get("evidence_sentence"))
            label = record.get("gold_label", record.get("label"))
            if "claim" not in record or evidence is None or label is None:
                raise ValueError(f"{path}: line {line_number + 1}: expected claim, evidence(_sentence) and (gold_)label")
            if isinstance(evidence, list):
                evidence = " ".join(str(e) for e in evidence)
            record_id = record.get("id", record.get("unique_id", line_number))
            examples.append(Example(
                id=f"{task}-{split}-{record_id}",
                text_a=record["claim"],
                text_b=str(evidence),
                label=_label_index(str(label), FEVER_LABELS, path, line_number),
            ))
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):  # v1 reuses ids across rows: fall back to line numbers
        examples = [Example(f"{task}-{split}-{i}", e.text_a, e.text_b, e.label, e.meta) for i, e in enumerate(examples)]
    return examples
