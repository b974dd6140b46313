"""Faults against whole commands on the tiny stability preset: SIGTERM at a time limit, two identical
commands on one --out, pickles planted where a study reads. A tiny-bert run is a few seconds."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from maskedbert.experiments.stability import command as stability_command
from maskedbert.sweep import load_study, status_cli
from maskedbert.train.runlog import read_jsonl

TINY = ["--preset", "tiny", "--no-progress", "--set", "train_limit=64", "--set", "dev_limit=32",
        "--set", "log_every=1"]
LONG = ["--set", "num_epochs=30"]  # 120 steps: long enough to be stopped mid-run


def _cli(*args):
    return [sys.executable, "-m", "maskedbert.cli", *args]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_steps(log_path):
    return [r["step"] for r in read_jsonl(log_path) if r["type"] == "train"] if os.path.exists(log_path) else []


def _in_process(argv):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): bit-for-bit comparable
    try:
        return stability_command.main(argv)
    finally:
        torch.set_num_threads(before)


def _comparable(result_path):
    result = json.loads(open(result_path).read())
    return {k: result[k] for k in ("steps", "final_metric", "final_metrics", "best_metric", "best_step")}


@pytest.mark.slow
def test_sigterm_saves_status_says_where_it_resumes_and_the_rerun_finishes_as_one_run(tmp_path, capsys):
    out = tmp_path / "study"
    args = [*TINY, *LONG, "--seeds", "1", "--out", str(out)]
    log = out / "default" / "seed_1" / "log.jsonl"
    for attempt in range(2):  # two time limits, then a run long enough
        proc = subprocess.Popen(_cli("stability", *args), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        start = max(_train_steps(log), default=0)
        deadline = time.monotonic() + 120
        while max(_train_steps(log), default=0) < start + 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err, err
        capsys.readouterr()
        assert status_cli.main([str(out)]) == 0
        text = capsys.readouterr().out
        saved = torch.load(out / "default" / "seed_1" / "checkpoint.pt", weights_only=True)["global_step"]
        assert saved >= start + 5 and f"resumes at step {saved} of 120" in text, text
    proc = subprocess.run(_cli("stability", *args), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _train_steps(log) == list(range(1, 121))  # every step once, as one run's log
    assert not (out / "default" / "seed_1" / "checkpoint.pt").exists()  # finished: not kept (retention)
    reference = tmp_path / "reference"
    assert _in_process([*TINY, *LONG, "--seeds", "1", "--out", str(reference)]) == 0
    assert _comparable(out / "default" / "seed_1" / "result.json") == _comparable(
        reference / "default" / "seed_1" / "result.json")
    assert _train_steps(log) == _train_steps(reference / "default" / "seed_1" / "log.jsonl")
    losses = lambda path: [r["loss"] for r in read_jsonl(path) if r["type"] == "train"]  # noqa: E731
    assert losses(log) == losses(reference / "default" / "seed_1" / "log.jsonl")


@pytest.mark.slow
def test_two_identical_commands_on_one_out_give_the_logs_and_results_of_one(tmp_path):
    out = tmp_path / "study"
    args = [*TINY, "--seeds", "1,2", "--out", str(out), "--wait"]
    first = subprocess.Popen(_cli("stability", *args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    second = subprocess.Popen(_cli("stability", *args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    results = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    assert sum("waiting for it to finish" in err for _, err in results) == 1, results
    study = load_study(str(out))
    reference = tmp_path / "reference"
    assert _in_process([*TINY, "--seeds", "1,2", "--out", str(reference)]) == 0
    for cell in ("default/seed_1", "default/seed_2"):
        assert study.failures(cell) == []
        records = read_jsonl(out / cell / "log.jsonl")
        assert [r["event"] for r in records if r["type"] == "event"] == ["start", "finished"]
        assert _train_steps(out / cell / "log.jsonl") == list(range(1, 9))
        assert _comparable(out / cell / "result.json") == _comparable(reference / cell / "result.json")


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickles_planted_where_a_study_reads_run_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    marker = tmp_path / "code-ran"
    assert _in_process([*TINY, "--seeds", "1", "--out", str(out)]) == 0
    payload = pickle.dumps({"model": _Planted(marker), "global_step": 1})
    seed_2 = out / "default" / "seed_2"
    seed_2.mkdir(parents=True)
    for name in ("checkpoint.pt", "best_model.pt"):  # what a resumed run loads
        torch.save({"model": _Planted(marker), "global_step": 1, "total_steps": 8}, seed_2 / name)
    for name in ("sweep_done.json", "sweep_running.json", "sweep_failures.json", "sweep_progress.json",
                 "sweep_attempts.json"):  # the sweep's records: JSON, never unpickled
        (seed_2 / name).write_bytes(payload)
    (out / "default" / "seed_1" / "result.json").write_bytes(payload)  # a finished run's result, read by report
    with pytest.warns(RuntimeWarning, match="checkpoint.pt is unreadable"):
        status = _in_process([*TINY, "--seeds", "1,2", "--out", str(out)])
    capsys.readouterr()
    assert status_cli.main([str(out)]) == 0
    (out / "sweep.json").write_bytes(payload)
    assert status_cli.main([str(out)]) == 2
    assert not marker.exists()
    assert status in (0, 1)  # seed_1's result file holds a pickle now: it is never read as one
    assert (seed_2 / "result.json").exists()
