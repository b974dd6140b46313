"""Bias models for debiased training, and bias / teacher probabilities aligned to examples by id.

Bias models (small, CPU, seconds):
  - FeatureBiasModel: logistic regression over hand-crafted NLI features (lexical overlap rate, every
    hypothesis word in the premise, hypothesis a contiguous span of the premise, negation words,
    length difference), the classic HANS-style bias (McCoy et al. 2019; Clark et al. 2019).
  - HypothesisOnlyBiasModel: logistic regression over a bag of hypothesis words (Poliak et al. 2018).
  - or probabilities precomputed elsewhere (`load_probs`): JSON / JSONL keyed by example id, or a
    .npy array with one row per training example in training-file order (the format of the
    reference code's bias_model_preds/ for MNLI and FEVER), as probabilities or log-probabilities.
    Pickle files (the reference's QQP predictions) are never unpickled here: unpickling runs code.
    `maskedbert convert-probs --trust-pickle IN.pkl OUT.jsonl` converts one you trust.

Probabilities travel as {id: [p_0, ..., p_{C-1}]} and are attached to examples by id
(`attach_probs` / `align_probs`), never by row order; a missing id is an error that names it.

Column order. maskedbert writes probability files with their label names, {"labels": [...],
"probs": {id: [...]}}, so a reader knows which column is which class. A .npy array (or a JSON file
without "labels") does not say: its column order is declared with `label_order` (the file's label
names, column by column), and `load_probs(..., label_names=task labels)` reorders the columns to the
task's order. A file of more than two classes whose order is neither written nor declared is
refused: the reference code's MNLI files, for one, order (contradiction, entailment, neutral) where
maskedbert's MNLI is (entailment, neutral, contradiction). A two-class file without an order is read
in the task's order.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError

NEGATION_WORDS = frozenset({"not", "no", "never", "nobody", "nothing", "none", "nowhere", "neither", "nor",
                            "cannot", "n't", "noone"})
FEATURE_NAMES = ("overlap_rate", "all_words_in_premise", "contiguous_subsequence", "negation_in_hypothesis",
                 "negation_in_premise", "length_difference", "hypothesis_length")
# Clark et al. (2019)'s HANS bias: lexical overlap only (their word-vector similarity features aside)
HANS_FEATURES = ("overlap_rate", "all_words_in_premise", "contiguous_subsequence")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|n't")
_SUM_TOL = 1e-3


def words(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation dropped)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def _is_contiguous(sub: list[str], seq: list[str]) -> bool:
    n = len(sub)
    return n > 0 and any(seq[i:i + n] == sub for i in range(len(seq) - n + 1))


def nli_features(premise: str, hypothesis: str) -> list[float]:
    """Hand-crafted bias features of one NLI pair, in FEATURE_NAMES order."""
    p, h = words(premise), words(hypothesis)
    p_set = set(p)
    in_premise = sum(w in p_set for w in h)
    overlap = in_premise / len(h) if h else 0.0
    return [
        overlap,
        float(bool(h) and in_premise == len(h)),
        float(_is_contiguous(h, p)),
        float(any(w in NEGATION_WORDS for w in h)),
        float(any(w in NEGATION_WORDS for w in p)),
        (len(p) - len(h)) / max(len(p), len(h), 1),
        math.log1p(len(h)),
    ]


# ---- logistic regression in torch -----------------------------------------------------------------
class LogisticRegression(torch.nn.Module):
    """Multinomial logistic regression, fit full-batch with L-BFGS in float64."""

    def __init__(self, num_features: int, num_labels: int):
        super().__init__()
        self.linear = torch.nn.Linear(num_features, num_labels, dtype=torch.float64)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.to(torch.float64))

    def fit(self, features: torch.Tensor, labels: torch.Tensor, *, l2: float = 1e-3, max_iter: int = 100):
        features, labels = features.to(torch.float64), labels.long()
        optimizer = torch.optim.LBFGS(self.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(self(features), labels) + l2 * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(features), dim=1)


def _labels_tensor(examples: Sequence[Mapping], num_labels: int) -> torch.Tensor:
    labels = []
    for ex in examples:
        y = ex.get("label")
        if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < num_labels:
            raise ValueError(f"example {ex.get('id')!r} has label {y!r}; expected an int in [0, {num_labels})")
        labels.append(y)
    return torch.tensor(labels)


def _check_examples(examples, fields=("id", "premise", "hypothesis")) -> list[Mapping]:
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    for ex in examples:
        if not isinstance(ex, Mapping):
            raise TypeError(f"examples must be dicts, got {type(ex).__name__}")
        missing = [f for f in fields if f not in ex]
        if missing:
            raise ValueError(f"example {ex.get('id')!r} lacks field(s) {missing}")
    return examples


class _BiasModel:
    """Shared fit / predict over a featurizer; subclasses define `_featurize`."""

    name = "bias"

    def __init__(self, l2: float = 1e-3):
        self.l2 = l2
        self.classifier: LogisticRegression | None = None
        self.num_labels: int | None = None

    def _prepare(self, examples: Sequence[Mapping]) -> None:  # build vocabularies etc.
        pass

    def _featurize(self, examples: Sequence[Mapping]) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, examples: Iterable[Mapping], num_labels: int) -> "_BiasModel":
        examples = _check_examples(examples, ("id", "premise", "hypothesis", "label"))
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"num_labels must be an integer >= 2, got {num_labels!r}")
        labels = _labels_tensor(examples, num_labels)
        self._prepare(examples)
        features = self._featurize(examples)
        self.num_labels = num_labels
        self.classifier = LogisticRegression(features.shape[1], num_labels).fit(features, labels, l2=self.l2)
        return self

    def predict_probs(self, examples: Iterable[Mapping]) -> dict[str, list[float]]:
        """{id: class probabilities} for the examples."""
        if self.classifier is None:
            raise RuntimeError(f"{type(self).__name__}.predict_probs called before fit")
        examples = _check_examples(examples)
        probs = self.classifier.predict_proba(self._featurize(examples))
        return {str(ex["id"]): row for ex, row in zip(examples, probs.tolist())}


class FeatureBiasModel(_BiasModel):
    """Logistic regression over `nli_features` (overlap, subsequence, negation, length) or a subset."""

    name = "features"

    def __init__(self, l2: float = 1e-3, feature_names: Sequence[str] = FEATURE_NAMES):
        super().__init__(l2)
        unknown = [f for f in feature_names if f not in FEATURE_NAMES]
        if unknown or not feature_names:
            raise ValueError(f"feature_names must be a non-empty subset of {FEATURE_NAMES}, got {list(feature_names)}")
        self.columns = [FEATURE_NAMES.index(f) for f in feature_names]

    def _featurize(self, examples):
        rows = [nli_features(ex["premise"], ex["hypothesis"]) for ex in examples]
        return torch.tensor(rows, dtype=torch.float64)[:, self.columns]


class HypothesisOnlyBiasModel(_BiasModel):
    """Logistic regression over a bag of hypothesis words (vocabulary from the training examples)."""

    name = "hypothesis_only"

    def __init__(self, l2: float = 1e-3, min_count: int = 1, max_vocab: int = 20000):
        super().__init__(l2)
        self.min_count, self.max_vocab = min_count, max_vocab
        self.vocab: dict[str, int] = {}

    def _prepare(self, examples):
        counts = Counter(w for ex in examples for w in words(ex["hypothesis"]))
        kept = [w for w, c in counts.most_common(self.max_vocab) if c >= self.min_count]
        self.vocab = {w: i for i, w in enumerate(sorted(kept))}

    def _featurize(self, examples):
        bag = torch.zeros(len(examples), max(len(self.vocab), 1), dtype=torch.float64)
        for row, ex in enumerate(examples):
            for w in words(ex["hypothesis"]):
                col = self.vocab.get(w)
                if col is not None:
                    bag[row, col] += 1.0
        return bag


BIAS_MODELS = {
    "hans_features": lambda **kw: FeatureBiasModel(feature_names=HANS_FEATURES, **kw),  # the overlap bias only
    "features": FeatureBiasModel,  # overlap, negation and length
    "hypothesis_only": HypothesisOnlyBiasModel,
}


def make_bias_model(kind: str, **kwargs) -> _BiasModel:
    """A new bias model: "hans_features" (overlap features), "features" (all) or "hypothesis_only"."""
    if kind not in BIAS_MODELS:
        raise ValueError(f"bias model kind must be one of {sorted(BIAS_MODELS)}, got {kind!r}")
    return BIAS_MODELS[kind](**kwargs)


def cross_fit_probs(kind: str, examples: Sequence[Mapping], num_labels: int, *, folds: int = 5,
                    seed: int = 0) -> dict[str, list[float]]:
    """Bias probabilities for training examples from models fit on the other folds.

    A bias model that has seen an example scores it over-confidently; out-of-fold predictions keep
    the training-set bias probabilities honest. Fold assignment is by a seeded shuffle of ids.
    """
    examples = _check_examples(examples, ("id", "premise", "hypothesis", "label"))
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(examples):
        raise ValueError(f"folds must be an integer in [2, {len(examples)}], got {folds!r}")
    order = list(range(len(examples)))
    torch.manual_seed(seed)
    order = [order[i] for i in torch.randperm(len(order)).tolist()]
    result: dict[str, list[float]] = {}
    for fold in range(folds):
        held = set(order[fold::folds])
        train = [ex for i, ex in enumerate(examples) if i not in held]
        model = make_bias_model(kind).fit(train, num_labels)
        result.update(model.predict_probs([examples[i] for i in sorted(held)]))
    return result


# ---- probabilities keyed by id ---------------------------------------------------------------------
def _check_prob_row(key: str, row, num_classes: int | None, source: str) -> list[float]:
    if not isinstance(row, (list, tuple)) or not row:
        raise ValueError(f"{source}: probabilities for id {key!r} must be a non-empty list, got {row!r}")
    values = [float(v) for v in row]
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(f"{source}: id {key!r} has {len(values)} probabilities, others have {num_classes}")
    if any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1.0) > _SUM_TOL:
        raise ValueError(f"{source}: probabilities for id {key!r} must be non-negative and sum to 1, got {values}")
    return values


def validate_probs(probs_by_id: Mapping, source: str = "probabilities") -> dict[str, list[float]]:
    """Check {id: probabilities} (same class count everywhere, rows sum to 1); ids become strings."""
    if not isinstance(probs_by_id, Mapping):
        raise TypeError(f"{source} must be a mapping id -> probabilities, got {type(probs_by_id).__name__}")
    out: dict[str, list[float]] = {}
    num_classes = None
    for key, row in probs_by_id.items():
        values = _check_prob_row(str(key), row, num_classes, source)
        num_classes = len(values)
        if str(key) in out:
            raise ValueError(f"{source}: duplicate id {str(key)!r}")
        out[str(key)] = values
    return out


def save_probs(path: str | os.PathLike, probs_by_id: Mapping, *, label_names: Sequence[str] | None = None) -> None:
    """Write {id: probabilities} atomically: JSON object for *.json, one {"id", "probs"} per line for *.jsonl.

    With `label_names` (the classes, column by column) the file carries them: *.json becomes
    {"labels": [...], "probs": {id: [...]}} and *.jsonl starts with a {"labels": [...]} line.
    """
    probs = validate_probs(probs_by_id)
    labels = None
    if label_names is not None:
        labels = [str(name) for name in label_names]
        width = len(next(iter(probs.values()))) if probs else len(labels)
        if width != len(labels) or len(set(labels)) != len(labels):
            raise ValueError(f"label_names must name each of the {width} columns once, got {labels}")
    if os.fspath(path).endswith(".jsonl"):
        header = json.dumps({"labels": labels}) + "\n" if labels is not None else ""
        text = header + "".join(json.dumps({"id": key, "probs": row}) + "\n" for key, row in probs.items())
    else:
        text = json.dumps(probs if labels is None else {"labels": labels, "probs": probs})
    write_text_atomic(path, text)


def _row_probs(record: Mapping, source: str, line: int):
    if "id" not in record:
        raise ValueError(f"{source}: record {line} has no 'id' field")
    for key in ("probs", "bias_probs", "teacher_probs"):
        if key in record:
            return str(record["id"]), record[key]
    if "log_probs" in record:
        return str(record["id"]), [math.exp(v) for v in record["log_probs"]]
    raise ValueError(f"{source}: record {line} (id {record['id']!r}) needs 'probs' or 'log_probs'")


PICKLE_SUFFIXES = (".pkl", ".pickle")
_PICKLE_MAGIC = b"\x80"  # the first byte of every pickle of protocol 2 or later


def _pickle_refusal(path: str, what: str) -> UsageError:
    stem = os.path.splitext(os.path.basename(path))[0]
    return UsageError(f"{path}: {what}, and a pickle is never loaded implicitly (unpickling can run any code). "
                      f"If you trust the file, convert it once: maskedbert convert-probs --trust-pickle {path} "
                      f"{stem}.jsonl")


def probs_from_array(values, source: str) -> np.ndarray:
    """[N, C] probabilities from an array of probabilities or of log-probabilities (told apart by sign).

    All values >= 0: probabilities; all <= 0 (some < 0): natural-log probabilities, exponentiated.
    Every row must then sum to 1 (within 1e-3). Returns float64.
    """
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[1] < 2 or array.shape[0] < 1:
        raise UsageError(f"{source}: expected one row of >= 2 class scores per example (shape [N, C]), "
                         f"got shape {list(array.shape)}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise UsageError(f"{source}: expected numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if np.isnan(array).any() or np.isposinf(array).any():
        row = int(np.argwhere(np.isnan(array) | np.isposinf(array))[0, 0])
        raise UsageError(f"{source}: row {row} holds NaN or +inf: {array[row].tolist()}")
    if (array < 0).any():
        if (array > 0).any():
            mixed = (array < 0).any(axis=1) & (array > 0).any(axis=1)
            row = int(np.argmax(mixed)) if mixed.any() else int(np.argmax((array > 0).any(axis=1)))
            raise UsageError(f"{source}: neither probabilities (all >= 0) nor log-probabilities (all <= 0): "
                             f"negative and positive values, e.g. row {row}: {array[row].tolist()}")
        array = np.exp(array)
    bad = np.abs(array.sum(axis=1) - 1.0) > _SUM_TOL
    if bad.any():
        row = int(np.argmax(bad))
        raise UsageError(f"{source}: row {row} does not sum to 1 as probabilities: {array[row].tolist()}")
    return array


def _load_npy(path: str, ids: Sequence | None) -> dict[str, list[float]]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:  # numpy refuses object arrays: their contents are pickled
        if "allow_pickle" in str(exc):
            raise _pickle_refusal(path, "holds pickled Python objects") from None
        raise UsageError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(loaded, np.ndarray):  # an .npz archive under a .npy name
        raise UsageError(f"{path}: expected one array (numpy.save), got an archive of {sorted(loaded.files)}")
    probs = probs_from_array(loaded, path)
    if ids is None:  # row numbers, as the reference indexes these files
        keys = [str(i) for i in range(len(probs))]
    else:
        keys = [str(i) for i in ids]
        if len(keys) != len(probs):
            raise UsageError(f"{path}: {len(probs)} rows but {len(keys)} ids. The rows are one per training "
                             f"example in training-file order, so ids must list the whole training file in "
                             f"its order (no --train-limit, filtering or shuffling)")
        if len(set(keys)) != len(keys):
            duplicate = next(k for k, n in Counter(keys).items() if n > 1)
            raise UsageError(f"ids: duplicate id {duplicate!r}; each row needs its own example id")
    return dict(zip(keys, probs.tolist()))


def _file_labels(value, path: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: 'labels' must be a list of label names, got {value!r}")
    return value


def _load_json_probs(path: str, raw: bytes) -> tuple[dict[str, list[float]], list[str] | None]:
    """({id: row}, the label names the file declares or None)."""
    text = raw.decode("utf-8")
    pairs: list[tuple[str, object]] = []
    labels = None
    if path.endswith(".jsonl"):
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not pairs and labels is None and isinstance(record, dict) and set(record) == {"labels"}:
                labels = _file_labels(record["labels"], path)
                continue
            pairs.append(_row_probs(record, path, line_no))
    else:
        data = json.loads(text)
        if isinstance(data, dict) and set(data) == {"labels", "probs"} and isinstance(data["probs"], dict):
            labels = _file_labels(data["labels"], path)
            pairs = list(data["probs"].items())
        elif isinstance(data, dict):
            pairs = list(data.items())
        elif isinstance(data, list):
            pairs = [_row_probs(rec, path, i) for i, rec in enumerate(data, 1)]
        else:
            raise ValueError(f"{path}: expected a JSON object {{id: probs}} or a list of records")
    seen: dict[str, object] = {}
    for key, row in pairs:
        if key in seen:
            raise ValueError(f"{path}: duplicate id {key!r}")
        seen[key] = row
    return validate_probs(seen, source=path), labels


def parse_label_order(value: str | Sequence[str] | None, flag: str = "label_order") -> tuple[str, ...] | None:
    """A column order given as "a,b,c" or a sequence of names; None stays None."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise UsageError(f"{flag}: expected the file's label names column by column, comma-separated and "
                         f"distinct (e.g. contradiction,entailment,neutral), got {value!r}")
    return tuple(names)


def _reorder_columns(probs: dict[str, list[float]], path: str, file_labels: Sequence[str] | None,
                     label_order: Sequence[str] | None, label_names: Sequence[str] | None,
                     order_flag: str) -> dict[str, list[float]]:
    """Columns from the file's order to `label_names`' order (see the module docstring)."""
    if label_order is not None and file_labels is not None and list(label_order) != list(file_labels):
        raise UsageError(f"{order_flag}: {path} names its columns {list(file_labels)}, "
                         f"but the declared order is {list(label_order)}; drop {order_flag}")
    order = file_labels if file_labels is not None else label_order
    order = list(order) if order is not None else None
    width = len(next(iter(probs.values()))) if probs else None
    if order is not None and width is not None and len(order) != width:
        raise UsageError(f"{order_flag}: {path} has {width} columns but the order names {len(order)}: {order}")
    if label_names is None:
        return probs
    names = list(label_names)
    if width is not None and width != len(names):
        raise UsageError(f"{path}: {width} columns, but the task has {len(names)} labels {names}")
    if order is None:
        if len(names) > 2:
            raise UsageError(f"{path} does not say which column is which label; declare its column order with "
                             f"{order_flag} (the file's label names, column by column, e.g. "
                             f"{','.join(sorted(names))}; the task's own order is {','.join(names)})")
        return probs  # two classes: the task's order
    if sorted(order) != sorted(names):
        raise UsageError(f"{order_flag}: {order} must name each of the task's labels {names} once")
    if order == names:
        return probs
    columns = [order.index(name) for name in names]
    return {key: [row[c] for c in columns] for key, row in probs.items()}


def load_probs(path: str | os.PathLike, ids: Sequence | None = None, *, label_names: Sequence[str] | None = None,
               label_order: str | Sequence[str] | None = None,
               order_flag: str = "label_order") -> dict[str, list[float]]:
    """Read {id: probabilities} from JSON / JSONL keyed by id, or from a .npy array in training-file order.

    JSON: {id: [...]}, {"labels": [...], "probs": {id: [...]}} or a list of records; JSONL: one record
    per line (optionally after a {"labels": [...]} line); a record is {"id": ..., "probs": [...]}
    ("bias_probs", "teacher_probs" or "log_probs" also read).
    .npy ([N, C], read with allow_pickle=False): probabilities or log-probabilities, told apart by
    sign; row i belongs to ids[i], so `ids` lists the training file's example ids in file order (a
    length mismatch is an error); without ids the keys are the row numbers "0".."N-1".
    With ids, the result holds exactly those ids (one missing from a JSON file is an error).
    `label_names`: the task's labels; the result's columns follow them, reordered from the file's
    "labels" or from `label_order` (the file's column order, "a,b,c" or a sequence). More than two
    labels and neither given: a UsageError naming `order_flag` (the option that declares the order).
    Pickle files (.pkl, .pickle, or pickled content) are refused with the command that converts them.
    """
    path = os.fspath(path)
    label_order = parse_label_order(label_order, order_flag)
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise _pickle_refusal(path, "is a pickle file")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such probability file")
    if path.lower().endswith(".npy"):
        probs = _load_npy(path, ids)
        return _reorder_columns(probs, path, None, label_order, label_names, order_flag)
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(_PICKLE_MAGIC):
        raise _pickle_refusal(path, "holds pickled data")
    probs, file_labels = _load_json_probs(path, raw)
    probs = _reorder_columns(probs, path, file_labels, label_order, label_names, order_flag)
    if ids is None:
        return probs
    keys = [str(i) for i in ids]
    align_probs(keys, probs, name=path)  # raises naming the missing ids
    return {k: probs[k] for k in keys}


def check_column_order(path: str | os.PathLike, label_names: Sequence[str], label_order=None,
                       order_flag: str = "label_order") -> None:
    """Raise the UsageError `load_probs(path, label_names=..., label_order=...)` would raise about the
    column order, reading only the file's header (for checks before a run starts)."""
    path = os.fspath(path)
    order = parse_label_order(label_order, order_flag)
    file_labels = read_file_labels(path)
    width = len(file_labels) if file_labels is not None else None
    if width is None and path.lower().endswith(".npy") and os.path.isfile(path):
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            width = shape[1] if len(shape) == 2 else None
        except ValueError:
            width = None  # load_probs says what is wrong with the file
    probs = {"": [0.0] * width} if width else {}
    _reorder_columns(probs, path, file_labels, order, label_names, order_flag)


def read_file_labels(path: str | os.PathLike) -> list[str] | None:
    """The label names a probability file declares ({"labels": [...]}), or None (.npy, plain JSON)."""
    path = os.fspath(path)
    if path.lower().endswith(".npy") or path.lower().endswith(PICKLE_SUFFIXES) or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(_PICKLE_MAGIC):
        return None
    return _load_json_probs(path, raw)[1]


def align_probs(ids: Sequence, probs_by_id: Mapping[str, Sequence[float]], name: str = "bias_probs") -> torch.Tensor:
    """Rows of `probs_by_id` in the order of `ids` as a float32 tensor [len(ids), C]; missing ids are an error."""
    keys = [str(i) for i in ids]
    missing = [k for k in keys if k not in probs_by_id]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{name}: no probabilities for id {shown}{more}")
    return torch.tensor([list(probs_by_id[k]) for k in keys], dtype=torch.float32)


def attach_probs(examples: Iterable[Mapping], probs_by_id: Mapping[str, Sequence[float]],
                 field: str = "bias_probs") -> list[dict]:
    """Copies of the examples with `field` set to their probabilities, looked up by example id."""
    examples = list(examples)
    for ex in examples:
        if "id" not in ex:
            raise ValueError(f"every example needs an 'id' to attach {field}; got one with keys {sorted(ex)}")
    rows = align_probs([ex["id"] for ex in examples], probs_by_id, name=field).tolist()
    return [{**ex, field: row} for ex, row in zip(examples, rows)]
