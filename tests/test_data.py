"""Task registry: local-file loaders on small files written here, synthetic task, tokenize + collate."""
from __future__ import annotations

import json
import os

import pytest
import torch

from maskedbert.data import (PadCollator, encode_examples, get_task, list_tasks, load_examples,
                             synthetic_pair_examples, synthetic_pair_vocabulary)
from maskedbert.data.examples import UNLABELED
from maskedbert.errors import UsageError
from maskedbert.models import build_word_tokenizer


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def test_registry_lists_the_tasks():
    names = set(list_tasks())
    for name in ("rte", "mrpc", "cola", "sst-2", "mnli", "mnli-mm", "qqp", "qnli", "sts-b", "hans", "paws-qqp",
                 "paws-wiki", "fever", "fever-symmetric-v1", "fever-symmetric-v2", "synthetic-pair"):
        assert name in names
    assert get_task("RTE").metric == "accuracy" and get_task("cola").metric == "mcc"
    assert get_task("sts-b").is_regression and get_task("hans").ood
    with pytest.raises(UsageError, match=r"unknown task 'nope'; choose one of: .*rte"):
        get_task("nope")


def test_glue_rte_mrpc_cola_mnli_tsv(tmp_path):
    _write(str(tmp_path / "RTE/train.tsv"), ["index\tsentence1\tsentence2\tlabel",
                                             '0\tA "quoted" man.\tA man.\tentailment',
                                             "1\tCats.\tDogs.\tnot_entailment"])
    rte = load_examples("rte", "train", data_dir=str(tmp_path / "RTE"))
    assert [e.label for e in rte] == [0, 1] and rte[0].text_a == 'A "quoted" man.'
    assert [e.id for e in rte] == ["rte-train-0", "rte-train-1"]
    _write(str(tmp_path / "RTE/test.tsv"), ["index\tsentence1\tsentence2", "0\tA.\tB."])
    assert load_examples("rte", "test", data_dir=str(tmp_path / "RTE"))[0].label == UNLABELED

    _write(str(tmp_path / "MRPC/dev.tsv"), ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                            "1\t11\t12\tHe said.\tHe stated.", "0\t13\t14\tX.\tY."])
    mrpc = load_examples("mrpc", "validation", data_dir=str(tmp_path / "MRPC"))
    assert [(e.text_b, e.label) for e in mrpc] == [("He stated.", 1), ("Y.", 0)]

    _write(str(tmp_path / "CoLA/train.tsv"), ["gj04\t1\t\tOur friends won't buy it.", "gj04\t0\t*\tBuy it won't."])
    cola = load_examples("cola", "train", data_dir=str(tmp_path / "CoLA"))
    assert [(e.text_a, e.text_b, e.label) for e in cola] == [("Our friends won't buy it.", None, 1),
                                                            ("Buy it won't.", None, 0)]

    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    _write(str(tmp_path / "MNLI/dev_mismatched.tsv"), [header, "0\t1\t7n\tfic\tP.\tH.\tneutral\tneutral"])
    mm = load_examples("mnli-mm", get_task("mnli-mm").dev_split, data_dir=str(tmp_path / "MNLI"))
    assert mm[0].id == "mnli-mm-validation_mismatched-7n" and mm[0].label == 1

    _write(str(tmp_path / "STS-B/dev.tsv"), ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                                             "sentence1\tsentence2\tscore", "0\tm\tf\t2012\t1\tx\ty\tA.\tB.\t3.8"])
    assert load_examples("sts-b", "validation", data_dir=str(tmp_path / "STS-B"))[0].label == pytest.approx(3.8)

    _write(str(tmp_path / "BAD/train.tsv"), ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tmaybe"])
    with pytest.raises(ValueError, match="label 'maybe'"):
        load_examples("rte", "train", data_dir=str(tmp_path / "BAD"))
    with pytest.raises(UsageError, match=r"--data-dir.*no such directory.*dev\.tsv"):
        load_examples("rte", "validation", data_dir=str(tmp_path / "missing"))
    with pytest.raises(UsageError, match=r"--data-dir.*lacks dev\.tsv"):
        load_examples("rte", "validation", data_dir=str(tmp_path / "RTE"))


def test_hans_keeps_heuristic_and_subcase(tmp_path):
    header = ("gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
              "sentence1\tsentence2\tpairID\theuristic\tsubcase\ttemplate")
    _write(str(tmp_path / "heuristics_evaluation_set.txt"), [
        header, "non-entailment\t(x)\t(y)\t(X)\t(Y)\tThe doctor saw the lawyer .\tThe lawyer saw the doctor .\tex0\t"
                "lexical_overlap\tln_subject/object_swap\ttemp1",
        "entailment\t(x)\t(y)\t(X)\t(Y)\tThe cat slept .\tThe cat slept .\tex1\tsubsequence\tse_PP_on_obj\ttemp2"])
    hans = load_examples("hans", "validation", data_dir=str(tmp_path))
    assert [e.label for e in hans] == [1, 0] and hans[0].id == "hans-validation-ex0"
    assert hans[0].meta == {"heuristic": "lexical_overlap", "subcase": "ln_subject/object_swap", "template": "temp1"}


def test_paws_strips_bytes_literals(tmp_path):
    _write(str(tmp_path / "dev_and_test.tsv"), ["id\tsentence1\tsentence2\tlabel",
                                                "5\tb'What is it?'\tb\"It's what?\"\t0", "6\tplain\ttext\t1"])
    paws = load_examples("paws-qqp", "validation", data_dir=str(tmp_path))
    assert [(e.id, e.text_a, e.text_b, e.label) for e in paws] == [
        ("paws-qqp-validation-5", "What is it?", "It's what?", 0), ("paws-qqp-validation-6", "plain", "text", 1)]
    with pytest.raises(ValueError, match="no hub copy"):
        load_examples("paws-qqp", "validation")


def test_fever_and_symmetric_field_variants(tmp_path):
    rows = [{"id": 3, "claim": "C1", "evidence": "E1", "gold_label": "SUPPORTS"},
            {"id": 4, "claim": "C2", "evidence": "E2", "gold_label": "NOT ENOUGH INFO"}]
    _write(str(tmp_path / "fever.dev.jsonl"), [json.dumps(r) for r in rows])
    fever = load_examples("fever", "validation", data_dir=str(tmp_path))
    assert [(e.id, e.label) for e in fever] == [("fever-validation-3", 0), ("fever-validation-4", 2)]
    sym = [{"id": 1, "claim": "C", "evidence_sentence": "E", "label": "REFUTES"},
           {"id": 1, "claim": "C'", "evidence_sentence": "E'", "label": "SUPPORTS"}]
    _write(str(tmp_path / "fever_symmetric_generated.jsonl"), [json.dumps(r) for r in sym])
    v1 = load_examples("fever-symmetric-v1", "validation", data_dir=str(tmp_path))
    assert [e.label for e in v1] == [1, 0] and len({e.id for e in v1}) == 2  # duplicate ids made unique


def test_synthetic_pair_is_seeded_sized_and_balanced():
    train = synthetic_pair_examples("train")
    assert len(train) == 2490 and len(synthetic_pair_examples("validation")) == 277
    assert train == synthetic_pair_examples("train") and train != synthetic_pair_examples("train", seed=1)
    share = sum(e.label for e in train) / len(train)
    assert 0.45 < share < 0.55
    for e in train[:200]:  # entailment iff the hypothesis is one of the premise's facts
        facts = [f.strip() for f in e.text_a.split(".") if f.strip()]
        assert (e.text_b.rstrip(" .") in facts) == (e.label == 0)
    train_ids, dev_ids = {e.id for e in train}, {e.id for e in synthetic_pair_examples("validation")}
    assert len(train_ids) == len(train) and not train_ids & dev_ids


def test_encode_and_collate_batches():
    tokenizer = build_word_tokenizer(synthetic_pair_vocabulary())
    examples = synthetic_pair_examples("validation", size=5)
    dataset = encode_examples(examples, tokenizer, max_length=12, label_map=[1, 0])
    dataset = dataset.with_fields(bias_probs=torch.full((5, 2), 0.5))
    batch = PadCollator(tokenizer.pad_token_id)([dataset[i] for i in (0, 3)])
    assert set(batch) >= {"input_ids", "attention_mask", "token_type_ids", "labels", "example_ids",
                          "example_index", "bias_probs"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[1] <= 12
    assert batch["example_ids"] == [examples[0].id, examples[3].id]
    assert batch["labels"].tolist() == [1 - examples[0].label, 1 - examples[3].label]  # label_map applied
    assert batch["token_type_ids"].max() == 1 and batch["bias_probs"].shape == (2, 2)
    with pytest.raises(ValueError, match="max_length"):
        encode_examples(examples, tokenizer, max_length=1)


def test_segment_ids_none_sends_no_token_type_ids():
    # uds-lsv/bert-stable-fine-tuning run_finetuning.py:307-310 passes token_type_ids only for model_type
    # bert/xlnet/albert; its configs say pooler-bert etc. (:24), so the model sees all-zero segment ids
    tokenizer = build_word_tokenizer(synthetic_pair_vocabulary())
    examples = synthetic_pair_examples("validation", size=3)
    dataset = encode_examples(examples, tokenizer, max_length=12, segment_ids="none")
    batch = PadCollator(tokenizer.pad_token_id)([dataset[i] for i in range(3)])
    assert "token_type_ids" not in batch
    with_ids = encode_examples(examples, tokenizer, max_length=12)
    assert with_ids.input_ids == dataset.input_ids
    with pytest.raises(ValueError, match="segment_ids"):
        encode_examples(examples, tokenizer, segment_ids="zeros")


def test_synthetic_nli_is_registered_when_present():
    pytest.importorskip("maskedbert.data.synthetic_nli")
    spec = get_task("synthetic-nli")
    assert spec.num_labels == 3 and get_task("synthetic-hans").ood
    dev = load_examples("synthetic-nli", "validation")
    assert len(dev) == 600 and len({e.id for e in dev}) == 600
    challenge = load_examples("synthetic-hans", "validation")
    assert {e.meta["heuristic"] for e in challenge} == {"lexical_overlap", "subsequence", "constituent"}
    vocabulary = set(spec.generator.vocabulary())
    assert all(w in vocabulary for e in dev[:50] for w in (e.text_a + " " + e.text_b).split())


def test_hub_failure_names_the_task_and_the_offline_fix(monkeypatch):
    import datasets

    from maskedbert.data.tasks import load_examples

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UsageError, match=r"'rte'.*train\.tsv.*--data-dir"):
        load_examples("rte", "train")
