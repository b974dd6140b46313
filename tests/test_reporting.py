"""report_to: TensorBoard event files and W&B offline runs get the JSONL log's scalars (loss, learning
rates, grad norms, mask sparsity, eval metrics); the --report-to flag; clear errors for missing packages."""
import argparse
import glob
import json
import os
import struct

import pytest
import torch

import maskedbert as mb
from maskedbert.data import PadCollator, encode_examples, synthetic_pair_examples, synthetic_pair_vocabulary
from maskedbert.errors import UsageError
from maskedbert.models import load_model_and_tokenizer
from maskedbert.train import TrainConfig, Trainer, make_evaluator
from maskedbert.train.reporting import add_report_to_argument, check_report_to, scalars_of
from maskedbert.train.runlog import RunLogger, read_jsonl


def _masked_run(out, report_to, steps=4):
    from maskedbert.pruning import CubicSparsitySchedule, MaskSparsityController

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary())
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))
    data = encode_examples(synthetic_pair_examples("train", size=32), tok, max_length=32)
    collate = PadCollator(tok.pad_token_id)
    controller = MaskSparsityController(model, CubicSparsitySchedule(0.5, 0.8, 0, steps), method="exact_topk")
    groups = mb.patching.mask_param_groups(model, lr_scores=1e-2, lr_weights=1e-3)
    config = TrainConfig(output_dir=str(out), max_steps=steps, batch_size=8, lr=1e-3, log_every=1, eval_every=2,
                         progress=False, report_to=report_to, checkpoint_at_end=False)
    trainer = Trainer(model, config, data, collate, param_groups=groups,
                      evaluate_fn=make_evaluator(data, collate, ["accuracy"]),
                      step_callback=lambda trainer, step: controller(step))
    trainer.train(resume=False)
    return read_jsonl(os.path.join(out, "log.jsonl"))


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path, one_torch_thread):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    log = _masked_run(tmp_path / "run", "tensorboard")
    files = glob.glob(str(tmp_path / "run" / "tensorboard" / "events.out.tfevents.*"))
    assert files
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/lr/mask_scores", "train/grad_norm", "train/sparsity",
            "eval/accuracy"} <= tags
    assert any(t.startswith("train/grad_norm/bert.") for t in tags)  # per-parameter norms
    train = [r for r in log if r["type"] == "train"]
    assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in train] == [1, 2, 3, 4]
    for name, key in (("train/loss", "loss"), ("train/sparsity", "sparsity"), ("train/grad_norm", "grad_norm_total")):
        assert [e.value for e in acc.Scalars(name)] == pytest.approx([r[key] for r in train], rel=1e-6)
    # the sparsity follows the schedule the step callback applied (exact top-k: 0.5 -> 0.8)
    assert train[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3) and train[0]["sparsity"] < 0.8
    assert [e.value for e in acc.Scalars("train/lr/mask_scores")] == pytest.approx(
        [r["lr_groups"]["mask_scores"] for r in train])
    evals = [r for r in log if r["type"] == "eval"]
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [r["step"] for r in evals] == [2, 4]


def test_no_reporter_writes_only_the_jsonl_log(tmp_path, one_torch_thread):
    log = _masked_run(tmp_path / "run", "none", steps=2)
    assert os.listdir(tmp_path / "run") == ["log.jsonl"]
    assert all("sparsity" in r for r in log if r["type"] == "train")


def _wandb_history(run_dir):
    """History rows of an offline W&B run, read from its .wandb file (LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "*.wandb"))
    data = open(path, "rb").read()
    pos, block, pending, rows, finished = 7, 32768, b"", [], False  # 7-byte W&B header, then 32 KiB blocks
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            finished = finished or record.WhichOneof("record_type") == "exit"
    return rows, finished


def test_wandb_offline_run_gets_the_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = str(tmp_path / "run")
    logger = RunLogger(run_dir, report_to="wandb", run_config={"lr": 1e-3})
    logger.log({"type": "event", "step": 0, "event": "start"})
    logger.log({"type": "train", "step": 1, "epoch": 0, "loss": 0.69, "lr": 1e-3, "sparsity": 0.5,
                "lr_groups": {"mask_scores": 1e-2, "weights": 1e-3}, "grad_norm_total": 2.0})
    logger.log({"type": "eval", "step": 1, "epoch": 0, "accuracy": 0.75})
    logger.close()
    import time

    deadline = time.time() + 60
    rows, finished = _wandb_history(run_dir)
    while not finished and time.time() < deadline:  # wandb-core may still be writing after finish() returns
        time.sleep(0.5)
        rows, finished = _wandb_history(run_dir)
    assert len(rows) == 1 and rows[0]["_step"] == 1
    assert {k: rows[0][k] for k in ("train/loss", "train/lr", "train/lr/mask_scores", "train/sparsity",
                                    "train/grad_norm", "eval/accuracy")} == {
        "train/loss": 0.69, "train/lr": 1e-3, "train/lr/mask_scores": 1e-2, "train/sparsity": 0.5,
        "train/grad_norm": 2.0, "eval/accuracy": 0.75}
    run_id = open(os.path.join(run_dir, "wandb_run_id")).read().strip()
    assert glob.glob(os.path.join(run_dir, "wandb", f"offline-run-*-{run_id}"))


def test_scalar_names():
    record = {"type": "train", "step": 3, "epoch": 1, "loss": 0.5, "lr": 0.1, "grad_norm_total": 1.5,
              "grad_norms": {"a.weight": 0.5}, "lr_groups": {"weights": 0.1}, "sparsity": 0.7}
    assert scalars_of(record) == {"train/loss": 0.5, "train/lr": 0.1, "train/grad_norm": 1.5,
                                  "train/grad_norm/a.weight": 0.5, "train/lr/weights": 0.1, "train/sparsity": 0.7,
                                  "train/epoch": 1.0}
    assert scalars_of({"type": "eval", "step": 3, "accuracy": 0.9, "ood/hans": 0.6}) == {
        "eval/accuracy": 0.9, "eval/ood/hans": 0.6}
    assert scalars_of({"type": "event", "step": 0, "event": "start"}) == {}


def test_report_to_flag_and_errors(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_report_to_argument(parser)
    assert parser.parse_args([]).report_to is None
    assert parser.parse_args(["--report-to", "tensorboard"]).report_to == "tensorboard"
    with pytest.raises(SystemExit):
        parser.parse_args(["--report-to", "mlflow"])
    with pytest.raises(UsageError, match="unknown reporter 'mlflow'"):
        check_report_to("mlflow")
    with pytest.raises(UsageError, match="unknown reporter"):
        TrainConfig(output_dir=str(tmp_path / "x"), report_to="mlflow")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install wandb \(or, in a maskedbert clone, pip install -e .\.\[wandb\]."):
        check_report_to("wandb", "--report-to")
    from maskedbert.experiments.finetune import FinetuneConfig, run_finetune

    with pytest.raises(UsageError, match="--report-to"):  # refused before anything is written
        run_finetune(FinetuneConfig(output_dir=str(tmp_path / "ft"), report_to="wandb"))
    assert not (tmp_path / "ft").exists()


def test_finetune_report_to_tensorboard(tmp_path, one_torch_thread):
    pytest.importorskip("tensorboard")
    from maskedbert.experiments.finetune import build_parser, main

    out = tmp_path / "ft"
    args = build_parser().parse_args(["--out", str(out), "--report-to", "tensorboard"])
    assert args.report_to == "tensorboard"
    assert main(["--out", str(out), "--report-to", "tensorboard", "--max-steps", "2", "--train-limit", "16",
                 "--dev-limit", "16", "--batch-size", "8", "--no-progress"]) == 0
    assert json.load(open(out / "config.json"))["report_to"] == "tensorboard"
    assert glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))


class _Crash(Exception):
    pass


def test_a_resumed_run_continues_the_tensorboard_run_without_duplicate_steps(tmp_path, one_torch_thread):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary())
    data = encode_examples(synthetic_pair_examples("train", size=32), tok, max_length=32)
    collate = PadCollator(tok.pad_token_id)
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=5, batch_size=8, lr=1e-3, log_every=1,
                         checkpoint_every=2, progress=False, report_to="tensorboard")

    def crash_at_4(trainer, step):
        if step == 4:  # steps 1-3 are logged, the checkpoint holds step 2
            raise _Crash

    with pytest.raises(_Crash):
        Trainer(model, config, data, collate, step_callback=crash_at_4).train(resume=False)
    Trainer(model, config, data, collate).train(resume=True)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    log = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4, 5]  # the interrupted run's step 3 was purged
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in log], rel=1e-6)


def test_report_to_takes_several_backends(tmp_path, monkeypatch, one_torch_thread):
    from maskedbert.train.reporting import MultiReporter, TensorBoardReporter, make_reporter, parse_report_to

    parser = argparse.ArgumentParser()
    add_report_to_argument(parser)
    for argv in (["--report-to", "wandb", "tensorboard"], ["--report-to", "tensorboard,wandb"]):
        assert parser.parse_args(argv).report_to == "tensorboard,wandb"
    assert parser.parse_args(["--report-to", "none"]).report_to == "none"
    for bad in (["--report-to", "none", "wandb"], ["--report-to", "tensorboard,mlflow"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert parse_report_to(["tensorboard"]) == check_report_to("tensorboard") == "tensorboard"
    with pytest.raises(UsageError, match="combines 'none'"):
        check_report_to("none,wandb")

    class Recorder:
        def __init__(self):
            self.calls = []

        def log(self, scalars, step):
            self.calls.append((scalars, step))

        def close(self):
            self.calls.append("closed")

    a, b = Recorder(), Recorder()
    both = MultiReporter([a, b])
    both.log({"train/loss": 1.0}, 3)
    both.close()
    assert a.calls == b.calls == [({"train/loss": 1.0}, 3), "closed"]
    assert isinstance(make_reporter("tensorboard", str(tmp_path / "one")), TensorBoardReporter)
    # a whole run with two backends: TensorBoard event files and the W&B run both appear
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    _masked_run(tmp_path / "run", "tensorboard,wandb", steps=2)
    assert glob.glob(str(tmp_path / "run" / "tensorboard" / "events.out.tfevents.*"))
    assert os.path.isfile(tmp_path / "run" / "wandb_run_id")


def test_wandb_runs_of_a_study_share_a_group_and_are_named_by_cell(tmp_path, monkeypatch):
    from maskedbert.train import reporting

    study = tmp_path / "stability-rte"
    (study / "lr_2e-5" / "seed_3").mkdir(parents=True)
    (study / "sweep.json").write_text("{}")
    assert reporting.wandb_group_and_name(str(study / "lr_2e-5" / "seed_3")) == ("stability-rte", "lr_2e-5/seed_3")
    assert reporting.wandb_group_and_name(str(tmp_path / "alone")) == (None, "alone")

    seen = {}

    class FakeWandb:  # records what wandb.init is given
        @staticmethod
        def init(**kwargs):
            seen.update(kwargs)
            return object()

    monkeypatch.setitem(__import__("sys").modules, "wandb", FakeWandb)
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    reporting.WandbReporter(str(study / "lr_2e-5" / "seed_3"))
    assert seen["group"] == "stability-rte" and seen["name"] == "lr_2e-5/seed_3"
    monkeypatch.setenv("WANDB_RUN_GROUP", "mine")
    reporting.WandbReporter(str(study / "lr_2e-5" / "seed_3"), run_name="explicit")
    assert seen["group"] == "mine" and seen["name"] == "explicit"


def test_progress_goes_through_the_maskedbert_logger(capsys):
    import logging

    from maskedbert.log import logger, propagate_to_root, status

    status("[sweep] %s: done", "seed_1")
    logger.warning("something to see")
    out = capsys.readouterr()
    assert out.out == "[sweep] seed_1: done\n" and out.err == "something to see\n"  # like print, by default
    level = logger.level
    try:
        logger.setLevel(logging.WARNING)  # a library user turning progress down
        status("quiet now")
        assert capsys.readouterr().out == ""
    finally:
        logger.setLevel(level)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    root = logging.getLogger()
    keep = Keep()
    root.addHandler(keep)
    handlers, propagate = list(logger.handlers), logger.propagate
    try:
        propagate_to_root()  # route through the application's own handlers instead
        status("to the root")
        assert records == ["to the root"] and capsys.readouterr().out == ""
    finally:
        root.removeHandler(keep)
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = propagate
