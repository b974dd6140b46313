"""Every srnet pipeline under each preset, end to end, on tiny files in the original distribution layouts.

The preset's structure runs unchanged (dense, (a) mask and IMP, (b)'s search and ticket fine-tuning,
(c), the oracle on ID + OOD data, best-dev selection); only the sizes are tiny: about 24 training
examples at batch 32 make every epoch one step, and evaluations come every 2 steps instead of 1000.
Layouts: GLUE MNLI / QQP TSVs, HANS heuristics_*_set.txt, PAWS TSVs, FEVER and FEVER-Symmetric JSONL;
bias predictions as the reference ships them (MNLI, FEVER .npy in its column order; QQP by id).
"""
from __future__ import annotations

import csv
import json
import os
import random

import numpy as np
import pytest

from maskedbert.experiments.srnet import command as srnet_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "the a man woman dog cat saw ran sat park house red blue big small happy old young".split()
N_TRAIN, N_DEV = 24, 8


def _sentence(rng: random.Random, n: int = 5) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + " ."


def _tsv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(header)
        writer.writerows(rows)


def _jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _mnli(root, rng):
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
    labels = ("entailment", "neutral", "contradiction")
    for name, n in (("train.tsv", N_TRAIN), ("dev_matched.tsv", N_DEV)):
        rows = []
        for i in range(n):
            label = labels[i % 3]
            rows.append([i, i, f"{i}{name[0]}", "fiction", "(x)", "(y)", "(X)", "(Y)", _sentence(rng), _sentence(rng),
                         label, label])
        _tsv(os.path.join(root, "MNLI", name), header, rows)
    header = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
              "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template"]
    for name, n in (("heuristics_train_set.txt", N_DEV), ("heuristics_evaluation_set.txt", N_DEV)):
        rows = [[("entailment", "non-entailment")[i % 2], "(x)", "(y)", "(X)", "(Y)", _sentence(rng), _sentence(rng),
                 f"ex{i}", "lexical_overlap", "ln_subject/object_swap", "temp1"] for i in range(n)]
        _tsv(os.path.join(root, "HANS", name), header, rows)
    # the reference's bias file: one row per training example in file order, columns (c, e, n)
    np.save(os.path.join(root, "log_probs.npy"), np.log(np.full((N_TRAIN, 3), 1 / 3, dtype=np.float32)))
    return dict(data=os.path.join(root, "MNLI"), ood=os.path.join(root, "HANS"),
                bias=os.path.join(root, "log_probs.npy"))


def _qqp(root, rng):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    for name, n in (("train.tsv", N_TRAIN), ("dev.tsv", N_DEV)):
        rows = [[100 + i, 2 * i, 2 * i + 1, _sentence(rng), _sentence(rng), i % 2] for i in range(n)]
        _tsv(os.path.join(root, "QQP", name), header, rows)
    for name in ("train.tsv", "dev.tsv"):  # the reference's paws_qqp/ (README.md:64-67)
        rows = [[i, f"b'{_sentence(rng)}'", f"b'{_sentence(rng)}'", i % 2] for i in range(N_DEV)]
        _tsv(os.path.join(root, "PAWS-QQP", name), ["id", "sentence1", "sentence2", "label"], rows)
    for name in ("train.tsv", "test.tsv"):
        rows = [[i, _sentence(rng), _sentence(rng), i % 2] for i in range(N_DEV)]
        _tsv(os.path.join(root, "PAWS-Wiki", name), ["id", "sentence1", "sentence2", "label"], rows)
    # the reference's QQP predictions are a pickle by QQP id; converted (convert-probs), by example id
    bias = os.path.join(root, "qqp_bias.jsonl")
    _jsonl(bias, [{"id": f"qqp-train-{100 + i}", "probs": [0.6, 0.4]} for i in range(N_TRAIN)])
    return dict(data=os.path.join(root, "QQP"), ood=os.path.join(root, "PAWS-QQP"), bias=bias,
                extra=["--extra-ood", "paws-wiki:test=" + os.path.join(root, "PAWS-Wiki"),
                       "--oracle-extra", "paws-wiki:train=" + os.path.join(root, "PAWS-Wiki")])


def _fever(root, rng):
    labels = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")
    for name, n in (("fever.train.jsonl", N_TRAIN), ("fever.dev.jsonl", N_DEV)):
        _jsonl(os.path.join(root, "fever", name), [{"id": i, "claim": _sentence(rng), "evidence": _sentence(rng),
                                                    "gold_label": labels[i % 3]} for i in range(n)])
    sym = os.path.join(root, "symmetric")
    _jsonl(os.path.join(sym, "fever_symmetric_generated.jsonl"),
           [{"id": i, "claim": _sentence(rng), "evidence_sentence": _sentence(rng), "label": labels[i % 2]}
            for i in range(N_DEV)])
    for name, n in (("fever_symmetric_dev.jsonl", 4), ("fever_symmetric_test.jsonl", N_DEV)):
        _jsonl(os.path.join(sym, name), [{"id": i, "claim": _sentence(rng), "evidence_sentence": _sentence(rng),
                                          "label": labels[i % 2]} for i in range(n)])
    np.save(os.path.join(root, "log_probs.npy"), np.log(np.full((N_TRAIN, 3), 1 / 3, dtype=np.float32)))
    return dict(data=os.path.join(root, "fever"), ood=sym, bias=os.path.join(root, "log_probs.npy"))


LAYOUTS = {"mnli": _mnli, "qqp": _qqp, "fever": _fever}


@pytest.mark.parametrize("preset", sorted(LAYOUTS))
def test_every_pipeline_runs_under_the_preset_on_original_layouts(tmp_path, preset):
    files = LAYOUTS[preset](str(tmp_path / "data"), random.Random(0))
    out = tmp_path / "run"
    argv = ["--preset", preset, "--out", str(out), "--data-dir", files["data"], "--ood-data-dir", files["ood"],
            "--bias-model", files["bias"], "--model", "tiny-bert", "--max-length", "24", "--losses", "ce,poe",
            "--sparsities", "0.2", "--imp-per-round", "0.2", "--oracle", "--eval-every", "2", "--reset-every", "2",
            "--ft-eval-every", "2", *files.get("extra", [])]
    assert srnet_command.main(argv) == 0
    cells = {os.path.splitext(n)[0] for n in os.listdir(out / "cells")}
    expected = {f"finetune-dense-{loss}-s0.00" for loss in ("ce", "poe")}
    for loss in ("ce", "poe"):
        expected |= {f"{p}-{m}-{loss}-s0.20" for p in ("ft_prune", "prune_ft") for m in ("mask", "imp")}
        expected.add(f"mask_pretrained-mask-{loss}-s0.20")
    expected.add("oracle-mask-ce-s0.20")
    assert cells == expected
    rows = {n: json.loads((out / "cells" / f"{n}.json").read_text()) for n in cells}
    # (b): the tickets were fine-tuned in their own phase (the preset's retraining), masks from the search
    assert rows["prune_ft-imp-ce-s0.20"]["search_loss"] == "poe"
    assert rows["prune_ft-mask-poe-s0.20"]["mask_from"] == "ft_prune-mask-poe-s0.20"
    assert rows["prune_ft-imp-poe-s0.20"]["ticket_steps"] >= 3
    # the reference's second OOD set of QQP / FEVER is evaluated beside the first (run_glue.py:438-445)
    extra = {"mnli": [], "qqp": ["paws-wiki:test"], "fever": ["fever-symmetric-v2:test"]}[preset]
    assert all(sorted(r.get("ood_sets", {})) == extra for r in rows.values())
    metric = "f1" if preset == "qqp" else "accuracy"
    assert all(r["id_metric_name"] == metric for r in rows.values())
    written = json.loads((out / "bias_probs.json").read_text())
    assert len(written["probs"]) == N_TRAIN and len(written["labels"]) == (2 if preset == "qqp" else 3)
    config = json.loads((out / "config.json").read_text())
    assert config["protocols"]["prune_ft/imp"]["phases"]["ticket"]["classifier_masked"] is False
