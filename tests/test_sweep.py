"""maskedbert.sweep on a toy runner (tests/sweep_toy.py, no torch): done markers, reruns, failures,
settings checks, needs, local workers and GPU pinning, status and report output, launcher flags."""
from __future__ import annotations

import argparse
import json
import os
import sys

import pytest

from maskedbert import sweep
from maskedbert.errors import UsageError
from maskedbert.sweep import report_cli, status_cli
from maskedbert.sweep.launchers import _parse_minutes
from sweep_toy import KINDS

TESTS = os.path.dirname(os.path.abspath(__file__))
RUNNER, REPORTER = "toy", "toy"


@pytest.fixture(autouse=True)
def toy_on_path(monkeypatch):
    """Worker processes import the toy runner by name: put tests/ on their path (and ours)."""
    monkeypatch.syspath_prepend(TESTS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))


def _cells(n=3, extra=None):
    """toy/v0 .. toy/v<n-1>; `extra` {index: spec fields} makes some cells fail or kill themselves."""
    return [sweep.Cell(f"toy/v{i}", {"value": i, **(extra or {}).get(i, {})}) for i in range(n)]


def _prepare(out, cells, settings=None):
    return sweep.prepare_study(str(out), kind="toy", runner=RUNNER, reporter=REPORTER,
                               settings=settings or {"lr": 1}, cells=cells)


def _attempts(study, cell_id):
    path = os.path.join(study.cell_dir(cell_id), "attempts.txt")
    return len(open(path).readlines()) if os.path.exists(path) else 0


def test_inline_runs_each_cell_once_and_records_results(tmp_path, capsys):
    study = _prepare(tmp_path, _cells())
    outcome = sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS)
    assert outcome.ran == {f"toy/v{i}": "done" for i in range(3)}
    assert [result["double"] for _, result in study.finished()] == [0, 2, 4]
    # the done marker is the last write: it holds the runner's result
    with open(os.path.join(study.cell_dir("toy/v2"), "sweep_done.json")) as f:
        assert json.load(f)["result"]["double"] == 4
    again = sweep.launch(_prepare(tmp_path, _cells()), sweep.LaunchOptions(), kinds=KINDS)
    assert again.ran == {} and [_attempts(study, c) for c in study.cells] == [1, 1, 1]
    assert capsys.readouterr().out.count("finished earlier, not rerun") == 3


def test_other_settings_are_refused_before_anything_is_written(tmp_path):
    _prepare(tmp_path, _cells(2))
    before = open(tmp_path / "sweep.json").read()
    with pytest.raises(UsageError, match=r"other settings \(changed: lr\)"):
        _prepare(tmp_path, _cells(2), settings={"lr": 2})
    with pytest.raises(UsageError, match="holds a toy study"):
        sweep.prepare_study(str(tmp_path), kind="stability", runner=RUNNER, settings={"lr": 1}, cells=_cells(2))
    assert open(tmp_path / "sweep.json").read() == before
    # more cells with the same settings is the same study, grown
    assert len(_prepare(tmp_path, _cells(4)).cells) == 4


def test_a_cell_failing_twice_is_reported_not_retried(tmp_path, capsys):
    cells = _cells(2, {1: {"fail": True}})
    study = _prepare(tmp_path, cells)
    assert sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS).ran == {"toy/v0": "done", "toy/v1": "pending"}
    assert sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS).ran == {"toy/v1": "failed"}
    third = sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS)
    assert third.ran == {} and "failed" in third.skipped["toy/v1"]
    assert _attempts(study, "toy/v1") == 2
    capsys.readouterr()
    assert status_cli.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "2 cells: 1 done, 0 running, 1 failed, 0 pending" in text
    assert "RuntimeError: toy cell 1 fails on purpose" in text and "log:" in text
    # --retry-failed forgets the record: one more attempt
    assert sweep.launch(study, sweep.LaunchOptions(retry_failed=True), kinds=KINDS).ran == {"toy/v1": "pending"}
    assert _attempts(study, "toy/v1") == 3


def test_a_cell_waits_for_the_cells_it_needs(tmp_path):
    cells = [sweep.Cell("base", {"value": 1, "fail": True}), sweep.Cell("derived", {"value": 2}, needs=("base",))]
    study = _prepare(tmp_path, cells)
    outcome = sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS)
    assert outcome.ran == {"base": "pending"} and "derived" in outcome.skipped
    assert _attempts(study, "derived") == 0
    with pytest.raises(ValueError, match="needs cells that are not in the study"):
        _prepare(tmp_path / "other", [sweep.Cell("a", {"value": 1}, needs=("nope",))])


def test_local_workers_match_inline_and_pin_gpus(tmp_path, capsys):
    inline = _prepare(tmp_path / "inline", _cells(4))
    sweep.launch(inline, sweep.LaunchOptions(), kinds=KINDS)
    local = _prepare(tmp_path / "local", _cells(4))
    outcome = sweep.launch(local, sweep.LaunchOptions(launcher="local", gpus=["0", "1"], runs_per_gpu=2, threads=1), kinds=KINDS)
    assert set(outcome.ran.values()) == {"done"}
    results = [r for _, r in local.finished()]
    assert [r["double"] for r in results] == [r["double"] for _, r in inline.finished()]
    assert len({r["pid"] for r in results}) == 4  # one fresh process per cell
    assert sorted(r["gpu"] for r in results) == ["0", "0", "1", "1"] and {r["threads"] for r in results} == {"1"}


def test_a_killed_worker_counts_as_a_failure_with_its_log(tmp_path):
    study = _prepare(tmp_path, _cells(2, {0: {"kill_self": True}}))
    outcome = sweep.launch(study, sweep.LaunchOptions(launcher="local", workers=2), kinds=KINDS)
    assert outcome.ran == {"toy/v0": "pending", "toy/v1": "done"}
    failure = study.failures("toy/v0")[0]
    assert failure["error"] == "worker killed by signal 9" and failure["log"].endswith("sweep_worker.log")
    assert not study.is_done("toy/v0")


def test_report_and_status_on_a_partial_study(tmp_path, capsys):
    study = _prepare(tmp_path, _cells(3))
    assert report_cli.main([str(tmp_path)], kinds=KINDS) == 2
    assert "no cell of" in capsys.readouterr().err
    sweep.execute_cell(study.dir, "toy/v1", kinds=KINDS)
    assert status_cli.main([str(tmp_path)]) == 0
    assert "3 cells: 1 done, 0 running, 0 failed, 2 pending" in capsys.readouterr().out
    assert report_cli.main([str(tmp_path)], kinds=KINDS) == 0
    out = capsys.readouterr().out
    assert "1 of 3 cells finished; 2 missing (toy/v0, toy/v2)" in out
    assert open(tmp_path / "toy_report.txt").read() == "toy/v1=2\n"
    assert status_cli.main([str(tmp_path / "nothing")]) == 2
    assert "holds no study" in capsys.readouterr().err



def test_an_unknown_runner_or_reporter_name_is_refused_and_never_imported(tmp_path, capsys):
    from maskedbert.experiments import study_kinds

    study = sweep.prepare_study(str(tmp_path), kind="toy", runner="sweep_toy_absent:run",
                                reporter="sweep_toy_absent:report", settings={}, cells=_cells(1))
    for kinds in (KINDS, study_kinds.KINDS):
        with pytest.raises(UsageError, match="sweep_toy_absent:run"):
            sweep.launch(study, sweep.LaunchOptions(), kinds=kinds)
        assert not os.path.exists(os.path.join(study.cell_dir("toy/v0"), "sweep_running.json"))
    with pytest.raises(UsageError, match="runner 'sweep_toy:run' is not a study maskedbert knows; expected one of "
                                         "stability, srnet"):
        study_kinds.runner("sweep_toy:run")
    sweep.execute_cell(_prepare(tmp_path / "done", _cells(1)).dir, "toy/v0", kinds=KINDS)
    done = sweep.load_study(str(tmp_path / "done"))
    with pytest.raises(UsageError, match="reporter 'toy' is not a study maskedbert knows"):
        report_cli.build_report(done, kinds=study_kinds.KINDS)
    assert "sweep_toy_absent" not in sys.modules

def _launch_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallel", type=int)
    sweep.add_launcher_arguments(parser)
    return sweep.launch_options_from_args(parser.parse_args(argv))


def test_launcher_flags_are_checked():
    assert _launch_args(["--parallel", "3"]).launcher == "local" and _launch_args(["--parallel", "3"]).workers == 3
    assert _launch_args(["--launcher", "slurm", "--slurm-time", "1:30:00"]).slurm_time == 90
    assert (_parse_minutes("45"), _parse_minutes("2-00:00:00"), _parse_minutes("0:00:30")) == (45, 2880, 1)
    for argv, message in ((["--workers", "2"], "--workers applies to --launcher local"),
                          (["--launcher", "local", "--workers", "0"], "--workers: expected a whole number >= 1"),
                          (["--launcher", "local", "--runs-per-gpu", "2"], "--runs-per-gpu: give --gpus"),
                          (["--launcher", "local", "--gpus", "0,1", "--workers", "3"], "len\\(--gpus\\) x"),
                          (["--slurm-partition", "gpu"], "applies to --launcher slurm"),
                          (["--launcher", "slurm", "--slurm-time", "soon"], "--slurm-time"),
                          (["--parallel", "2", "--launcher", "slurm"], "--parallel 2 means")):
        with pytest.raises(UsageError, match=message):
            _launch_args(argv)


def test_slurm_without_submitit_or_scheduler_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError, match=r"needs the optional package submitit; pip install submitit \(or, in a maskedbert clone, "
                                        r"pip install -e '\.\[slurm\]'\)"):
        sweep.check_launcher(sweep.LaunchOptions(launcher="slurm"))
    monkeypatch.delitem(sys.modules, "submitit")
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UsageError, match="no `sbatch` on PATH"):
        sweep.check_launcher(sweep.LaunchOptions(launcher="slurm"))
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n")
    squeue.chmod(0o755)
    with pytest.raises(UsageError, match="scheduler does not answer .*Unable to contact slurm controller"):
        sweep.check_launcher(sweep.LaunchOptions(launcher="slurm"))


def test_an_attempt_killed_without_a_trace_reads_as_interrupted(tmp_path):
    import signal
    import subprocess

    from maskedbert.sweep import study as study_module

    study = _prepare(tmp_path, _cells(1))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = study_module._process_start(child.pid)[1]
    record = {"host": study_module.socket.gethostname(), "pid": child.pid, "pid_start": start, "job_id": None,
              "log": None, "started": "then"}
    study_module._write_json(os.path.join(study.cell_dir("toy/v0"), study_module.RUNNING), record)
    assert study.state("toy/v0").status == "running"
    os.kill(child.pid, signal.SIGKILL)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie is not a live attempt
    assert study_module._process_start(child.pid)[0] == "Z"
    assert study.state("toy/v0").status == "pending" and "interrupted" in study.state("toy/v0").detail
    child.wait()
    study_module._write_json(os.path.join(study.cell_dir("toy/v0"), study_module.RUNNING),
                             dict(record, pid=os.getpid(), pid_start="1"))  # our pid, another start: reused
    assert study.state("toy/v0").status == "pending"
    assert sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS).ran == {"toy/v0": "done"}


def test_slurm_flags_become_sbatch_options(tmp_path):
    submitit = pytest.importorskip("submitit")
    from maskedbert.sweep import slurm

    options = _launch_args(["--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-time", "1:30:00",
                            "--slurm-gpus-per-task", "2", "--slurm-cpus-per-task", "8",
                            "--slurm-array-parallelism", "4", "--slurm-setup", "module load cuda"])
    executor = submitit.SlurmExecutor(folder=str(tmp_path / "%j"))
    executor.update_parameters(**slurm.executor_parameters(options, "toy"))  # submitit checks them here
    script = executor._make_submission_file_text("python -c pass", "")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-task=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --job-name=maskedbert-toy", "module load cuda"):
        assert line in script, line
