"""Bias-probability files in the reference code's formats: .npy rows in file order, pickles only via convert-probs.

llyx97/sparse-and-robust-PLM's bias_model_preds/ holds MNLI and FEVER as probs.npy / log_probs.npy
([N, C] float32, one row per training example in file order) and QQP as a pickled dict {QQP id:
scores}; the tests write files of those shapes.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from maskedbert import bias
from maskedbert.errors import UsageError
from maskedbert.experiments import convert_probs

PROBS = np.array([[0.5, 0.2, 0.3], [0.1, 0.8, 0.1], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]], dtype=np.float32)
IDS = ["pair-7", "pair-3", "pair-11", "pair-0"]  # training-file order, not sorted


def _close(loaded: dict, expected: np.ndarray, ids):
    assert list(loaded) == list(ids)
    np.testing.assert_allclose(np.array([loaded[k] for k in ids]), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["probs", "log_probs"])
def test_npy_rows_follow_the_training_file_order(tmp_path, kind):
    path = tmp_path / f"{kind}.npy"
    with np.errstate(divide="ignore"):  # log(0) = -inf is what a log-prob file holds for p = 0
        np.save(path, PROBS if kind == "probs" else np.log(PROBS))
    _close(bias.load_probs(path, ids=IDS), PROBS, IDS)
    _close(bias.load_probs(path), PROBS, ["0", "1", "2", "3"])  # no ids: row numbers, as the reference indexes
    examples = [{"id": i} for i in reversed(IDS)]
    attached = bias.attach_probs(examples, bias.load_probs(path, ids=IDS))
    np.testing.assert_allclose([e["bias_probs"] for e in attached], PROBS[::-1], atol=1e-6)


def test_npy_length_mismatch_and_bad_values_are_usage_errors(tmp_path):
    path = tmp_path / "probs.npy"
    np.save(path, PROBS)
    with pytest.raises(UsageError, match=r"4 rows but 3 ids.*training-file order"):
        bias.load_probs(path, ids=IDS[:3])
    with pytest.raises(UsageError, match="duplicate id 'pair-7'"):
        bias.load_probs(path, ids=IDS[:3] + ["pair-7"])
    np.save(path, np.array([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(UsageError, match="row 0 does not sum to 1"):
        bias.load_probs(path)
    np.save(path, np.array([[0.5, 0.5], [-0.1, 1.1]]))
    with pytest.raises(UsageError, match="neither probabilities .* row 1"):
        bias.load_probs(path)
    np.save(path, np.array([0.5, 0.5]))
    with pytest.raises(UsageError, match=r"shape \[N, C\].*\[2\]"):
        bias.load_probs(path)


def test_pickles_are_refused_with_the_conversion_command(tmp_path):
    pkl = tmp_path / "log_probs.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({1: [-0.1, -2.4]}, f)
    with pytest.raises(UsageError, match=r"never loaded implicitly.*maskedbert convert-probs --trust-pickle "
                                         r".*log_probs\.pkl log_probs\.jsonl"):
        bias.load_probs(pkl)
    hidden = tmp_path / "probs.json"  # pickled content under another name
    hidden.write_bytes(pkl.read_bytes())
    with pytest.raises(UsageError, match="holds pickled data.*--trust-pickle"):
        bias.load_probs(hidden)
    objects = tmp_path / "objects.npy"  # numpy refuses object arrays without allow_pickle
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="pickled Python objects.*convert-probs --trust-pickle"):
        bias.load_probs(objects)


def _qqp_like_pickle(path, log=True):
    """The reference's QQP shape: {int QQP id: per-class scores} (here numpy float32 rows)."""
    rows = {402555: [0.9, 0.1], 17: [0.3, 0.7], 88231: [0.5, 0.5]}
    payload = {k: (np.log(np.array(v, dtype=np.float32)) if log else np.array(v, dtype=np.float32))
               for k, v in rows.items()}
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    return {str(k): v for k, v in rows.items()}


@pytest.mark.parametrize("log", [True, False])
def test_convert_probs_round_trip(tmp_path, capsys, log):
    pkl, out = tmp_path / "qqp.pkl", tmp_path / "qqp.jsonl"
    expected = _qqp_like_pickle(pkl, log=log)
    assert convert_probs.main(["--trust-pickle", str(pkl), str(out)]) == 0
    assert "3 rows" in capsys.readouterr().out
    prefixed = tmp_path / "prefixed.jsonl"  # maskedbert's QQP example ids: qqp-train-<id column>
    assert convert_probs.main(["--trust-pickle", str(pkl), str(prefixed), "--id-prefix", "qqp-train-"]) == 0
    assert sorted(bias.load_probs(prefixed)) == sorted(f"qqp-train-{k}" for k in expected)
    loaded = bias.load_probs(out)
    assert sorted(loaded) == sorted(expected)
    for key, row in expected.items():
        assert loaded[key] == pytest.approx(row, abs=1e-6)
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"id", "probs"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_convert_probs_refusals_write_nothing(tmp_path):
    pkl, out = tmp_path / "qqp.pkl", tmp_path / "qqp.jsonl"
    _qqp_like_pickle(pkl)
    with pytest.raises(UsageError, match="--trust-pickle"):
        convert_probs.main([str(pkl), str(out)])
    with pytest.raises(UsageError, match="OUT.*must end in .jsonl or .json"):
        convert_probs.main(["--trust-pickle", str(pkl), str(tmp_path / "qqp.npy")])
    with pytest.raises(UsageError, match="IN: no such file"):
        convert_probs.main(["--trust-pickle", str(tmp_path / "missing.pkl"), str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qqp.pkl"]
    out.write_text("{}")
    with pytest.raises(UsageError, match="exists.*--overwrite"):
        convert_probs.main(["--trust-pickle", str(pkl), str(out)])
    assert convert_probs.main(["--trust-pickle", "--overwrite", str(pkl), str(out)]) == 0
    assert len(bias.load_probs(out)) == 3


def test_convert_npy_with_ids_file(tmp_path):
    npy, ids, out = tmp_path / "log_probs.npy", tmp_path / "ids.txt", tmp_path / "bias.jsonl"
    with np.errstate(divide="ignore"):
        np.save(npy, np.log(PROBS))
    ids.write_text("\n".join(IDS) + "\n")
    assert convert_probs.main([str(npy), str(out), "--ids-from", str(ids)]) == 0
    _close(bias.load_probs(out), PROBS, IDS)


def test_cli_lists_convert_probs():
    from maskedbert import cli

    assert cli.COMMANDS["convert-probs"][0] == "maskedbert.experiments.convert_probs"


def test_json_with_ids_returns_exactly_those_ids(tmp_path):
    path = tmp_path / "bias.jsonl"
    bias.save_probs(path, {"a": [0.5, 0.5], "b": [0.9, 0.1], "c": [0.2, 0.8]})
    assert bias.load_probs(path, ids=["c", "a"]) == {"c": [0.2, 0.8], "a": [0.5, 0.5]}
    with pytest.raises(ValueError, match="no probabilities for id 'zz'"):
        bias.load_probs(path, ids=["a", "zz"])
    with pytest.raises(UsageError, match="no such probability file"):
        bias.load_probs(tmp_path / "missing.json")


# ---- column order ---------------------------------------------------------------------------------
MNLI_LABELS = ("entailment", "neutral", "contradiction")  # maskedbert's MNLI order (data/tasks.py)
# the reference's MNLI order, hg_transformers/data/processors/glue.py:233 of llyx97/sparse-and-robust-PLM
REFERENCE_MNLI_ORDER = ("contradiction", "entailment", "neutral")


def test_reference_ordered_npy_reads_entailment_where_the_file_says_entailment(tmp_path):
    # rows as the reference writes them: columns (contradiction, entailment, neutral)
    rows = np.array([[0.05, 0.90, 0.05], [0.7, 0.1, 0.2]], dtype=np.float32)
    path = tmp_path / "log_probs.npy"
    np.save(path, np.log(rows))
    loaded = bias.load_probs(path, ids=["a", "b"], label_names=MNLI_LABELS, label_order=REFERENCE_MNLI_ORDER)
    assert loaded["a"][MNLI_LABELS.index("entailment")] == pytest.approx(0.90, abs=1e-6)
    assert loaded["b"][MNLI_LABELS.index("contradiction")] == pytest.approx(0.7, abs=1e-6)
    assert loaded["b"] == pytest.approx([0.1, 0.2, 0.7], abs=1e-6)
    # the same order given as the option's text
    assert bias.load_probs(path, ids=["a", "b"], label_names=MNLI_LABELS,
                           label_order="contradiction,entailment,neutral") == loaded


def test_undeclared_order_of_a_three_class_npy_is_refused_in_one_line(tmp_path):
    path = tmp_path / "probs.npy"
    np.save(path, PROBS[:2])
    with pytest.raises(UsageError, match="--bias-label-order") as info:
        bias.load_probs(path, ids=["a", "b"], label_names=MNLI_LABELS, order_flag="--bias-label-order")
    assert "\n" not in str(info.value)
    plain = tmp_path / "plain.json"  # a JSON file without "labels" says no more than a .npy
    bias.save_probs(plain, {"a": [0.2, 0.3, 0.5]})
    with pytest.raises(UsageError, match="which column is which"):
        bias.load_probs(plain, label_names=MNLI_LABELS)
    for bad in ("entailment,neutral", "entailment,neutral,neutral", ""):
        with pytest.raises(UsageError, match="label_order"):
            bias.load_probs(path, ids=["a", "b"], label_names=MNLI_LABELS, label_order=bad)
    with pytest.raises(UsageError, match="must name each of the task's labels"):
        bias.load_probs(path, ids=["a", "b"], label_names=MNLI_LABELS, label_order="yes,no,maybe")
    two = tmp_path / "two.npy"  # two classes: read in the task's order without a declaration
    np.save(two, np.array([[0.9, 0.1]]))
    assert bias.load_probs(two, label_names=("not_duplicate", "duplicate")) == {"0": [0.9, 0.1]}


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_files_written_with_labels_carry_their_order(tmp_path, suffix):
    path = tmp_path / f"bias_probs{suffix}"
    bias.save_probs(path, {"a": [0.05, 0.9, 0.05]}, label_names=REFERENCE_MNLI_ORDER)
    assert bias.read_file_labels(path) == list(REFERENCE_MNLI_ORDER)
    assert bias.load_probs(path) == {"a": [0.05, 0.9, 0.05]}  # no task given: columns as written
    assert bias.load_probs(path, label_names=MNLI_LABELS) == {"a": [0.9, 0.05, 0.05]}
    assert bias.load_probs(path, label_names=MNLI_LABELS, label_order=REFERENCE_MNLI_ORDER)["a"][0] == 0.9
    with pytest.raises(UsageError, match="names its columns"):
        bias.load_probs(path, label_names=MNLI_LABELS, label_order=MNLI_LABELS)
    if suffix == ".json":
        assert json.loads(path.read_text()) == {"labels": list(REFERENCE_MNLI_ORDER),
                                                "probs": {"a": [0.05, 0.9, 0.05]}}
    with pytest.raises(ValueError, match="label_names must name each of the 3 columns"):
        bias.save_probs(path, {"a": [0.05, 0.9, 0.05]}, label_names=("x", "y"))


def test_convert_probs_label_order_writes_the_labels(tmp_path):
    npy, ids, out = tmp_path / "log_probs.npy", tmp_path / "ids.txt", tmp_path / "bias.jsonl"
    np.save(npy, np.log(np.array([[0.05, 0.90, 0.05]], dtype=np.float32)))
    ids.write_text("pair-1\n")
    assert convert_probs.main([str(npy), str(out), "--ids-from", str(ids), "--label-order",
                               ",".join(REFERENCE_MNLI_ORDER)]) == 0
    assert bias.read_file_labels(out) == list(REFERENCE_MNLI_ORDER)
    assert bias.load_probs(out, label_names=MNLI_LABELS)["pair-1"] == pytest.approx([0.9, 0.05, 0.05], abs=1e-6)
    with pytest.raises(UsageError, match="--label-order.*3 columns"):
        convert_probs.main([str(npy), str(tmp_path / "b.jsonl"), "--label-order", "a,b"])
