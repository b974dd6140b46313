"""Faults around a study folder: user files under --out, a second command on the same --out, torn or
emptied records, attempts that never progress, workers killed from outside. Toy cells (no torch) or
commands refused before they train: seconds in all."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from maskedbert import cli, sweep
from maskedbert._lock import folder_lock
from maskedbert.experiments.cli_common import study_out
from maskedbert.study_folder import MARKER_NAME, claim_out_folder
from maskedbert.sweep import report_cli, status_cli
from maskedbert.sweep import study as study_module

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
from sweep_toy import KINDS  # noqa: E402

TINY_SRNET = ["--model", "tiny-bert", "--ft-steps", "2", "--prune-steps", "2", "--train-size", "24", "--dev-size", "8",
              "--challenge-per-cell", "2", "--batch-size", "8", "--max-length", "16", "--losses", "ce",
              "--pipelines", "ft_prune", "--methods", "mask", "--sparsities", "0.5"]


def _tree(folder) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = open(path, "rb").read()
    return files


def _user_folder(path):
    for rel, text in {"logs/notes.txt": "mine", "checkpoints/model.pt": "weights", "finetune/run/a.txt": "a",
                      "results.csv": "x,y\n", "config.json": '{"mine": 1}', "seed-data/s.txt": "s",
                      "seed-1/keep.txt": "k", "cells/c.json": "{}"}.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return _tree(path)


def _cli(args, capsys):
    try:
        status = cli.main(list(args))
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["srnet", "--fresh", "--dry-run", *TINY_SRNET],
    ["srnet", "--fresh", *TINY_SRNET],
    ["srnet", *TINY_SRNET],                       # without --fresh: its config.json would be replaced
    ["demo", "--quick", "--fresh"],
    ["stability", "--preset", "tiny", "--num-seeds", "1"],
])
def test_a_folder_of_user_files_is_refused_and_nothing_in_it_changes(tmp_path, capsys, argv):
    before = _user_folder(tmp_path / "proj")
    status, err = _cli([*argv, "--out", str(tmp_path / "proj")], capsys)
    assert status == 2, err
    assert "not empty and not a" in err and "--adopt-out" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert _tree(tmp_path / "proj") == before


def test_fresh_deletes_only_what_the_study_wrote(tmp_path):
    out = tmp_path / "proj"
    before = _user_folder(out)
    owned = ("cells", "checkpoints", "logs", "results.csv", "config.json", "masks", "seed-[0-9]*")
    with study_out(str(out), "srnet", owned=owned, adopt=True):  # the user's files are recorded as theirs
        (out / "masks").mkdir()
        (out / "masks" / "m.safetensors").write_text("study")
    with study_out(str(out), "srnet", owned=owned, fresh=True, dry_run=True):
        pass
    assert (out / "masks" / "m.safetensors").exists()  # a dry run deletes nothing
    with study_out(str(out), "srnet", owned=owned, fresh=True):
        pass
    assert not (out / "masks").exists()
    after = _tree(out)
    assert {k: v for k, v in after.items() if k not in (MARKER_NAME, ".lock")} == before


def test_demo_fresh_keeps_a_users_seed_data_folder(tmp_path):
    out = tmp_path / "demo"
    with study_out(str(out), "demo", owned=("results.csv", "seed-[0-9]*")):
        (out / "seed-1").mkdir()
        (out / "results.csv").write_text("study")
    (out / "seed-data").mkdir()
    (out / "seed-data" / "mine.txt").write_text("user")
    with study_out(str(out), "demo", owned=("results.csv", "seed-[0-9]*"), fresh=True):
        pass
    assert sorted(os.listdir(out)) == [".lock", MARKER_NAME, "seed-data"]


def test_a_study_of_another_kind_and_an_unreadable_marker_are_refused(tmp_path):
    from maskedbert.errors import UsageError

    claim_out_folder(tmp_path / "a", "demo")
    with pytest.raises(UsageError, match="holds a demo study, not a srnet one"):
        claim_out_folder(tmp_path / "a", "srnet")
    (tmp_path / "a" / MARKER_NAME).write_text("")  # emptied marker: unknown, refused, never a crash
    with pytest.raises(UsageError, match="unreadable"):
        claim_out_folder(tmp_path / "a", "demo")
    assert claim_out_folder(tmp_path / "a", "demo", adopt=True)["kind"] == "demo"


def test_a_marker_being_written_by_another_command_is_not_a_users_file(tmp_path):
    # the instant between another command's lock and its marker's rename: only the lock and the
    # marker's temporary are there, and a second command checking before it waits must not refuse
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / ".lock").write_text("{}")
    (folder / f".{MARKER_NAME}.0a1b2c3d.tmp").write_text("")
    assert claim_out_folder(folder, "demo", dry_run=True)["adopted"] == []
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        claim_out_folder(folder, "demo", dry_run=True)


_HOLD = """
import sys, time
from maskedbert._lock import folder_lock
from maskedbert.study_folder import claim_out_folder
claim_out_folder(sys.argv[1], sys.argv[2])
with folder_lock(sys.argv[1], command="maskedbert holder-for-test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _hold(out, kind, seconds):
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), kind, str(seconds)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.mark.parametrize("argv, kind", [(["srnet", *TINY_SRNET], "srnet"),
                                        (["stability", "--preset", "tiny", "--num-seeds", "1"], "stability"),
                                        (["demo", "--quick"], "demo")])
def test_a_second_command_on_a_busy_out_stops_in_one_line_naming_the_first(tmp_path, capsys, argv, kind):
    out = tmp_path / "study"
    holder = _hold(out, kind, 60)
    try:
        before = _tree(out)
        status, err = _cli([*argv, "--out", str(out)], capsys)
        assert status == 2, err
        assert f"pid {holder.pid}" in err and "maskedbert holder-for-test" in err and "--wait" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert _tree(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_wait_blocks_until_the_first_command_is_done(tmp_path):
    out = tmp_path / "study"
    import time

    holder = _hold(out, "toy", 1.5)
    messages = []
    start = time.monotonic()
    with folder_lock(out, wait=True, on_wait=messages.append):
        assert time.monotonic() - start > 1.0  # the holder's block had ended before the lock was ours
    holder.wait()
    assert len(messages) == 1 and f"pid {holder.pid}" in messages[0]


def test_a_copied_study_does_not_trust_the_originals_lock_or_pid(tmp_path):
    import shutil

    original = _prepare(tmp_path / "a", {"value": 1})
    cell_dir = original.cell_dir("toy/v0")
    holder = _hold(cell_dir, "toy", 60)  # the original's cell is running
    try:
        study_module._write_json(os.path.join(cell_dir, study_module.RUNNING),
                                 {"host": study_module.socket.gethostname(), "pid": holder.pid, "started": "now"})
        assert original.state("toy/v0").status == "running"
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        copy = sweep.load_study(str(tmp_path / "b"))
        assert copy.state("toy/v0").status == "pending"  # same pid, alive, but not this folder's lock
        assert sweep.launch(copy, sweep.LaunchOptions(), kinds=KINDS).ran == {"toy/v0": "done"}
        assert sweep.launch(original, sweep.LaunchOptions(), kinds=KINDS).ran == {}  # still running there
    finally:
        holder.kill()
        holder.wait()


def _prepare(out, *specs):
    cells = [sweep.Cell(f"toy/v{i}", spec) for i, spec in enumerate(specs)]
    return sweep.prepare_study(str(out), kind="toy", runner="toy", reporter="toy", settings={}, cells=cells)


@pytest.mark.parametrize("record, content", [("sweep_done.json", ""), ("sweep_done.json", "{\"res"),
                                             ("sweep_running.json", "\x00garbage"), ("sweep_failures.json", ""),
                                             ("sweep_submitted.json", "[1,")])
def test_torn_cell_records_are_survived(tmp_path, capsys, record, content):
    study = _prepare(tmp_path, {"value": 1}, {"value": 2})
    sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS)
    path = os.path.join(study.cell_dir("toy/v0"), record)
    with open(path, "w") as f:
        f.write(content)
    capsys.readouterr()
    assert status_cli.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    if record == "sweep_done.json":
        assert "unknown  toy/v0" in out and "unreadable" in out, out
    assert report_cli.main([str(tmp_path)], kinds=KINDS) == 0
    outcome = sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS)
    assert outcome.ran == ({"toy/v0": "done"} if record == "sweep_done.json" else {})
    assert study.is_done("toy/v0") and study.result("toy/v0") == {**study.result("toy/v0"), "double": 2}
    if record == "sweep_done.json":
        assert any(".unreadable-" in name for name in os.listdir(study.cell_dir("toy/v0")))


@pytest.mark.parametrize("content", ["", "{", "[]", '{"kind": "toy"}'])
def test_an_unreadable_sweep_json_is_one_line_and_a_relaunch_rewrites_it(tmp_path, capsys, content):
    study = _prepare(tmp_path, {"value": 1})
    sweep.launch(study, sweep.LaunchOptions(), kinds=KINDS)
    (tmp_path / "sweep.json").write_text(content)
    for main in (status_cli.main, lambda argv: report_cli.main(argv, kinds=KINDS)):
        assert main([str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "unreadable" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    again = _prepare(tmp_path, {"value": 1})
    assert sweep.launch(again, sweep.LaunchOptions(), kinds=KINDS).ran == {}  # the finished cell is kept
    assert json.loads((tmp_path / "sweep.json").read_text())["kind"] == "toy"


def test_a_worker_killed_from_outside_is_interrupted_and_three_without_progress_fail_with_the_reason(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))  # the toy worker
    study = _prepare(tmp_path, {"value": 1, "kill_self": True})
    options = sweep.LaunchOptions(launcher="local", workers=1)
    for _ in range(study_module.NO_PROGRESS_ATTEMPTS):
        assert sweep.launch(study, options, kinds=KINDS).ran == {"toy/v0": "interrupted"}
        assert study.failures("toy/v0") == []
        assert study.state("toy/v0").status == "pending"
    assert "restarts" in study.state("toy/v0").detail
    assert sweep.launch(study, options, kinds=KINDS).ran == {"toy/v0": "failed"}
    state = study.state("toy/v0")
    assert state.status == "failed" and "no progress in 3 attempts" in state.detail, state
    capsys.readouterr()
    status_cli.main([str(tmp_path)])
    assert "no progress in 3 attempts" in capsys.readouterr().out
    from maskedbert.sweep.launchers import cells_to_run

    assert cells_to_run(study, retry_failed=True)[0] == ["toy/v0"]  # --retry-failed forgets the verdict
    assert study.state("toy/v0").status == "pending"


def test_checkpoints_count_as_progress_and_status_says_where_a_cell_resumes(tmp_path):
    study = _prepare(tmp_path, {"value": 1})
    cell_dir = study.cell_dir("toy/v0")
    os.makedirs(cell_dir)
    checkpoint = os.path.join(cell_dir, "checkpoint.pt")
    open(checkpoint, "w").close()
    attempts = [{"started": "t", "host": "h", "saves_before": n} for n in (0, 1, 2)]
    study_module._write_json(os.path.join(cell_dir, study_module.ATTEMPTS), attempts)
    study_module._write_json(os.path.join(cell_dir, study_module.PROGRESS),
                             {"saves": 3, "step": 30, "total": 80, "checkpoint": checkpoint})
    assert "resumes at step 30 of 80" in study.state("toy/v0").detail
    assert not study_module._stalled(study, "toy/v0")  # every attempt saved one: progress
    os.unlink(checkpoint)
    assert "restarts" in study.state("toy/v0").detail


def test_local_workers_die_with_their_launcher(tmp_path):
    script = f"""
import sys, os
sys.path.insert(0, {TESTS!r})
from sweep_toy import KINDS
from maskedbert import sweep
study = sweep.prepare_study(sys.argv[1], kind="toy", runner="toy", reporter="toy", settings={{}},
                            cells=[sweep.Cell("toy/v0", {{"value": 1, "sleep": 60}})])
sweep.launch(study, sweep.LaunchOptions(launcher="local", workers=1), kinds=KINDS)
"""
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env={**os.environ,
                              "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")})
    attempts = tmp_path / "toy" / "v0" / "attempts.txt"
    import time

    deadline = time.monotonic() + 60
    while not attempts.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    running = json.loads((tmp_path / "toy" / "v0" / "sweep_running.json").read_text())
    parent.kill()  # SIGKILL: no chance to stop its workers itself
    parent.wait()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{running['pid']}") and time.monotonic() < deadline:
        with open(f"/proc/{running['pid']}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{running['pid']}") or open(f"/proc/{running['pid']}/stat").read().rsplit(
        ")", 1)[1].split()[0] == "Z", "the worker outlived its launcher"
