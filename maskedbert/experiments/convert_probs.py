"""`maskedbert convert-probs`: turn a bias model's predictions into the JSONL that `bias.load_probs` reads.

    maskedbert convert-probs --trust-pickle bias_model_preds/QQP/log_probs.pkl qqp_bias.jsonl --id-prefix qqp-train-
    maskedbert convert-probs bias_model_preds/MNLI/probs.npy mnli_bias.jsonl --ids-from mnli_ids.txt \
        --label-order contradiction,entailment,neutral

The reference code (llyx97/sparse-and-robust-PLM) ships QQP's bias predictions as a pickled dict
{QQP id: [score per class]} (it indexes it by the number in each example's id, run_glue.py:316-343),
and MNLI's and FEVER's as .npy arrays, one row per training example in file order. Scores may be
probabilities or log-probabilities; both are written as probabilities, {"id": ..., "probs": [...]}
per line, after a {"labels": [...]} line when --label-order names the columns (the reference orders
MNLI's as contradiction, entailment, neutral). Unpickling runs whatever code the file holds, so a
pickle is read only with --trust-pickle.
"""
from __future__ import annotations

import argparse
import os
import pickle
from typing import Any

from maskedbert.errors import UsageError

# numpy and maskedbert.bias (torch) load inside the functions: `--help` stays fast

__all__ = ["convert_probs", "build_parser", "main"]

OUTPUT_SUFFIXES = (".jsonl", ".json")


def _is_pickle(path: str) -> bool:
    from maskedbert import bias  # keeps --help torch-free

    if path.lower().endswith(bias.PICKLE_SUFFIXES):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # protocol 2+ pickles; .npy starts with \x93NUMPY, JSON with text


def _probs_from_pickled(obj: Any, source: str) -> dict[str, list[float]]:
    import numpy as np  # keeps --help light (numpy)

    from maskedbert import bias  # keeps --help torch-free

    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        if len(set(keys)) != len(keys):
            raise UsageError(f"{source}: two keys print as the same id (e.g. 1 and '1')")
        rows = list(obj.values())
    elif isinstance(obj, (list, tuple, np.ndarray)):  # rows in file order, as the .npy files
        keys, rows = [str(i) for i in range(len(obj))], list(obj)
    else:
        raise UsageError(f"{source}: expected a dict {{id: scores}} or a list of rows, got {type(obj).__name__}")
    if not rows:
        raise UsageError(f"{source}: holds no predictions")
    try:
        matrix = np.stack([np.asarray(row, dtype=np.float64).reshape(-1) for row in rows])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: every value must be a list of class scores of one length ({exc})") from None
    return dict(zip(keys, bias.probs_from_array(matrix, source).tolist()))


def _read_ids(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def convert_probs(source: str, target: str, *, trust_pickle: bool = False, ids: list[str] | None = None,
                  overwrite: bool = False, label_order: str | None = None, id_prefix: str = "") -> int:
    """Write `source`'s predictions to `target` (.jsonl or .json) as probabilities by id, labelled with
    `label_order` (the source's column names) when given; returns the row count."""
    from maskedbert import bias  # keeps --help torch-free

    labels = bias.parse_label_order(label_order, "--label-order")

    if not target.endswith(OUTPUT_SUFFIXES):
        raise UsageError(f"OUT: {target!r} must end in .jsonl or .json (the formats bias.load_probs reads by id)")
    if os.path.exists(target) and not overwrite:
        raise UsageError(f"OUT: {target} exists; choose another path or pass --overwrite")
    if not os.path.isfile(source):
        raise UsageError(f"IN: no such file {source!r}")
    if _is_pickle(source):
        if not trust_pickle:
            raise UsageError(f"IN: {source} is a pickle, and unpickling runs any code it holds; pass --trust-pickle "
                             f"only for a file you trust")
        if ids is not None:
            raise UsageError("--ids-from: a pickle carries its own ids; drop --ids-from")
        with open(source, "rb") as f:
            try:
                obj = pickle.load(f)
            except Exception as exc:  # a corrupt or foreign pickle can fail in many ways
                raise UsageError(f"IN: {source} could not be unpickled ({type(exc).__name__}: {exc})") from None
        probs = _probs_from_pickled(obj, source)
    else:
        try:
            probs = bias.load_probs(source, ids=ids)
        except UsageError:
            raise
        except (ValueError, TypeError, KeyError, OSError, UnicodeDecodeError) as exc:  # the file, not a bug
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"IN: cannot read {source} as predictions ({reason})") from None
    if not probs:
        raise UsageError(f"IN: {source} holds no predictions")
    width = len(next(iter(probs.values())))
    if labels is not None and len(labels) != width:
        raise UsageError(f"--label-order: {source} has {width} columns, the order names {len(labels)}: {list(labels)}")
    if id_prefix:  # the reference keys QQP by its id column; maskedbert's example ids are "qqp-train-<id>"
        probs = {f"{id_prefix}{key}": row for key, row in probs.items()}
    bias.save_probs(target, probs, label_names=labels)
    return len(probs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskedbert convert-probs", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("source", metavar="IN", help="predictions: .pkl/.pickle (needs --trust-pickle), .npy, .json, .jsonl")
    p.add_argument("target", metavar="OUT", help="output file, .jsonl or .json")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling IN (runs any code the file holds; without it: refuse)")
    p.add_argument("--ids-from", metavar="FILE",
                   help="for a .npy IN: one example id per line, in training-file order (default: row numbers)")
    p.add_argument("--label-order", default=None,
                   help="IN's column order as label names, e.g. contradiction,entailment,neutral; OUT then names its "
                        "labels (default: OUT names none)")
    p.add_argument("--id-prefix", default="", help="prepended to every id, e.g. qqp-train- (maskedbert's QQP example "
                   "ids are qqp-train-<id column>; the reference's pickle is keyed by the id column alone)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ids = _read_ids(args.ids_from) if args.ids_from else None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"--ids-from: cannot read {args.ids_from!r} ({reason})") from None
    count = convert_probs(args.source, args.target, trust_pickle=args.trust_pickle, ids=ids, overwrite=args.overwrite,
                          label_order=args.label_order, id_prefix=args.id_prefix)
    print(f"maskedbert convert-probs: {count} rows of probabilities by id -> {args.target}")
    return 0
