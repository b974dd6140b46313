"""Every bad argument: exit status 2, one line on stderr naming the flag, no traceback, nothing written.

The table covers srnet, stability, demo, finetune, status and convert-probs. Should a check be missing,
the command must not start training here: the launchers and the training entry points are replaced by
stubs that fail the test."""
from __future__ import annotations

import os

import numpy as np
import pytest

from maskedbert import cli

SRNET = ["srnet", "--model", "tiny-bert", "--ft-steps", "2", "--prune-steps", "2", "--train-size", "24",
         "--dev-size", "8", "--challenge-per-cell", "2", "--batch-size", "8", "--max-length", "16", "--losses", "ce",
         "--pipelines", "ft_prune", "--methods", "mask", "--sparsities", "0.5"]
STABILITY = ["stability", "--preset", "tiny", "--num-seeds", "1", "--no-progress"]
FINETUNE = ["finetune", "--max-steps", "2", "--train-limit", "16", "--dev-limit", "8", "--no-progress"]
LONG_NAME = "x" * 300

# (case, argv, the flag the message must name); {tmp} holds the shared inputs, {work} is the case's own
# folder, {notok} a model folder saved without tokenizer files, {file} an existing plain file
CASES = [
    ("srnet lr nan", [*SRNET, "--lr", "nan"], "--lr"),
    ("srnet lr inf", [*SRNET, "--lr", "inf"], "--lr"),
    ("srnet lr negative", [*SRNET, "--lr", "-1"], "--lr"),
    ("srnet lr-scores 0", [*SRNET, "--lr-scores", "0"], "--lr-scores"),
    ("srnet imp-per-round 0", [*SRNET, "--imp-per-round", "0"], "--imp-per-round"),
    ("srnet imp-per-round 1", [*SRNET, "--imp-per-round", "1"], "--imp-per-round"),
    ("srnet threshold nan", [*SRNET, "--threshold", "nan"], "--threshold"),
    ("srnet train-size 0", [*SRNET, "--train-size", "0"], "--train-size"),
    ("srnet dev-size 0", [*SRNET, "--dev-size", "0"], "--dev-size"),
    ("srnet challenge-per-cell 0", [*SRNET, "--challenge-per-cell", "0"], "--challenge-per-cell"),
    ("srnet bias-model missing file", [*SRNET, "--losses", "poe", "--bias-model", "{tmp}/missing.jsonl"],
     "--bias-model"),
    ("srnet teacher-probs missing file", [*SRNET, "--teacher-probs", "{tmp}/missing.jsonl"], "--teacher-probs"),
    ("srnet max-length 0", [*SRNET, "--max-length", "0"], "--max-length"),
    ("srnet max-length 1", [*SRNET, "--max-length", "1"], "--max-length"),
    ("srnet ft-epochs inf", [*SRNET, "--ft-epochs", "inf"], "--ft-epochs"),
    ("srnet prune-epochs nan", [*SRNET, "--prune-epochs", "nan"], "--prune-epochs"),
    ("srnet anneal-floor 2", [*SRNET, "--anneal-floor", "2"], "--anneal-floor"),
    ("srnet warmup-steps -1", [*SRNET, "--warmup-steps", "-1"], "--warmup-steps"),
    ("srnet eval-every 0", [*SRNET, "--eval-every", "0"], "--eval-every"),
    ("srnet seed -1", [*SRNET, "--seed", "-1"], "--seed"),
    ("srnet batch-size 0", [*SRNET, "--batch-size", "0"], "--batch-size"),
    ("srnet model without tokenizer", [*SRNET, "--model", "{notok}"], "--tokenizer"),
    ("srnet out name too long", [*SRNET, "--out", "{tmp}/" + LONG_NAME], "--out"),
    ("srnet out is a file", [*SRNET, "--out", "{file}"], "--out"),
    ("stability set lr=nan", [*STABILITY, "--set", "lr=nan"], "lr"),
    ("stability set batch_size=0", [*STABILITY, "--set", "batch_size=0"], "batch_size"),
    ("stability set task=nosuch", [*STABILITY, "--set", "task=nosuch"], "task"),
    ("stability set max_length=0", [*STABILITY, "--set", "max_length=0"], "max_length"),
    ("stability set num_epochs=inf", [*STABILITY, "--set", "num_epochs=inf"], "num_epochs"),
    ("stability set unknown key", [*STABILITY, "--set", "nosuch=1"], "nosuch"),
    ("stability data-dir missing", [*STABILITY, "--data-dir", "{tmp}/nonexistent"], "--data-dir"),
    ("stability seeds repeated", [*STABILITY[:3], "--seeds", "1,1"], "--seeds"),
    ("stability seeds not numbers", [*STABILITY[:3], "--seeds", "a,b"], "--seeds"),
    ("stability num-seeds 0", [*STABILITY[:3], "--num-seeds", "0"], "--num-seeds"),
    ("stability configurations unknown", [*STABILITY, "--configurations", "nosuch"], "--configurations"),
    ("stability preset unknown", ["stability", "--preset", "nosuch"], "--preset"),
    ("stability parallel 0", [*STABILITY, "--parallel", "0"], "--parallel"),
    ("stability model without tokenizer", [*STABILITY, "--set", "model={notok}"], "--tokenizer"),
    ("stability out name too long", [*STABILITY, "--out", "{tmp}/" + LONG_NAME], "--out"),
    ("demo threads 100000", ["demo", "--quick", "--threads", "100000"], "--threads"),
    ("demo threads 0", ["demo", "--quick", "--threads", "0"], "--threads"),
    ("demo out is a file", ["demo", "--quick", "--out", "{file}"], "--out"),
    ("finetune lr nan", [*FINETUNE, "--lr", "nan"], "--lr"),
    ("finetune batch-size 0", [*FINETUNE, "--batch-size", "0"], "--batch-size"),
    ("finetune max-length 0", [*FINETUNE, "--max-length", "0"], "--max-length"),
    ("finetune seed -1", [*FINETUNE, "--seed", "-1"], "--seed"),
    ("finetune model without tokenizer", [*FINETUNE, "--model", "{notok}"], "--tokenizer"),
    ("status of a file", ["status", "{file}"], "DIR"),
    ("status of a missing folder", ["status", "{tmp}/nothing"], "DIR"),
    ("convert-probs missing input", ["convert-probs", "{tmp}/missing.npy", "{work}/out.jsonl"], "IN"),
    ("convert-probs input is a folder", ["convert-probs", "{tmp}", "{work}/out.jsonl"], "IN"),
    ("convert-probs empty input", ["convert-probs", "{tmp}/empty.jsonl", "{work}/out.jsonl"], "IN"),
    ("convert-probs garbage input", ["convert-probs", "{tmp}/garbage.json", "{work}/out.jsonl"], "IN"),
    ("convert-probs npy of one dimension", ["convert-probs", "{tmp}/flat.npy", "{work}/out.jsonl"], "flat.npy"),
    ("convert-probs output exists", ["convert-probs", "{tmp}/good.npy", "{file}"], "OUT"),
    ("convert-probs output suffix", ["convert-probs", "{tmp}/good.npy", "{work}/out.csv"], "OUT"),
    ("convert-probs ids-from missing", ["convert-probs", "--ids-from", "{tmp}/ids.txt", "{tmp}/good.npy",
                                        "{work}/out.jsonl"], "--ids-from"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "a-file").write_text("x")
    (folder / "empty.jsonl").write_text("")
    (folder / "garbage.json").write_bytes(b"\x00\xff not json")
    np.save(folder / "flat.npy", np.ones(4, dtype=np.float32))
    np.save(folder / "good.npy", np.full((3, 2), 0.5, dtype=np.float32))
    notok = folder / "model-without-tokenizer"
    from maskedbert.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer("tiny-bert", 2)
    model.save_pretrained(notok)
    return folder


def _snapshot(*folders) -> dict:
    found = {}
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            for name in dirs + names:
                path = os.path.join(root, name)
                found[path] = os.path.getsize(path) if os.path.isfile(path) else None
    return found


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the command got past its checks and started its runs")

    import maskedbert.experiments.demo as demo
    import maskedbert.experiments.finetune as finetune
    import maskedbert.experiments.srnet.command as srnet_command
    import maskedbert.sweep as sweep

    monkeypatch.setattr(sweep, "launch", refuse)
    monkeypatch.setattr(srnet_command, "run_cells", refuse)
    monkeypatch.setattr(finetune, "run_finetune", refuse)
    monkeypatch.setattr(demo, "run_seed", refuse)


@pytest.mark.parametrize("case, argv, flag", CASES, ids=[c[0] for c in CASES])
def test_a_bad_argument_is_exit_2_one_line_nothing_written(tmp_path, monkeypatch, capsys, inputs, no_training,
                                                           case, argv, flag):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default --out folders land here
    names = {"tmp": str(inputs), "notok": str(inputs / "model-without-tokenizer"), "file": str(inputs / "a-file"),
             "work": str(work)}
    argv = [a.format(**names) for a in argv]
    if "--out" not in argv and argv[0] in ("srnet", "stability", "demo", "finetune"):
        argv += ["--out", str(work / "out")]
    before = _snapshot(work, inputs)
    capsys.readouterr()  # what the fixtures printed
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err, err
    if not any("usage:" in line for line in lines):  # argparse prints usage + one error line
        assert len(lines) == 1, err
    assert flag in err, err
    assert _snapshot(work, inputs) == before
