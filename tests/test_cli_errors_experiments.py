"""srnet and demo: user mistakes exit 2 with one line naming the flag, no traceback, nothing written."""
import os

import pytest

from maskedbert import cli


def run_cli(args, capsys):
    try:
        status = cli.main(list(args))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv, flag", [
    (["srnet", "--model", "/no/such/dir"], "--model"),
    (["srnet", "--task", "nosuchtask"], "--task"),
    (["srnet", "--task", "mnli"], "--data-dir"),  # no network here: the hub check names --data-dir
    (["srnet", "--ood-task", "nosuch", "--task", "rte"], "--ood-task"),
    (["srnet", "--sparsities", "1.5"], "--sparsities"),
    (["srnet", "--losses", "focal"], "--losses"),
    (["srnet", "--preset", "sst2"], "--preset"),
    (["srnet", "--device", "cuda:7"], "--device"),
    (["demo", "--threads", "0"], "--threads"),
])
def test_mistake_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    status, _, err = run_cli([*argv, "--out", str(out)], capsys)
    assert status == 2, err
    assert "Traceback" not in err and flag in err, err
    assert len(err.strip().splitlines()) <= 2, err
    assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["srnet", "demo"])
def test_out_naming_a_file(tmp_path, capsys, command):
    target = tmp_path / "a-file"
    target.write_text("x")
    status, _, err = run_cli([command, "--out", str(target)], capsys)
    assert status == 2 and "--out" in err and "Traceback" not in err
    assert target.read_text() == "x"
