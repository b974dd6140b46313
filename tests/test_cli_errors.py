"""The command line as a user meets it: each mistake gives one clear line on stderr, exit status 2, no
traceback and nothing on disk; Ctrl-C says how to resume (exit 130); bugs keep their traceback;
--version; help shows every default and answers fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from maskedbert import _hub, cli
from maskedbert.experiments import example, finetune
from maskedbert.experiments.cli_common import HelpFormatter


def run_cli(args, capsys):
    """maskedbert <args> in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(list(args))
    except SystemExit as exc:  # argparse's errors and --help
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, names in os.walk(folder) for name in dirs + names)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory (holding one file, `afile`) whose contents the test compares after."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory\n")
    return tmp_path


def assert_usage_error(status, err, *needles):
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("maskedbert "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def hub_unreachable(monkeypatch):
    """As on a machine without network (and without offline mode set), whatever this machine has."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_hub, "hub_unreachable_reason", lambda: "cannot connect to huggingface.co:443: test")
    monkeypatch.setattr(_hub, "cached_model_config", lambda name: None)


# ---- finetune: each mistake of the issue -----------------------------------------------------------------
FINETUNE_MISTAKES = {
    "missing model dir": (["--model", "/no/such/dir"], ["--model", "no such directory '/no/such/dir'"]),
    "model dir without config.json": (["--model", "."], ["--model", "no config.json"]),
    "unknown task": (["--task", "nosuchtask"], ["--task", "'nosuchtask'", "rte", "synthetic-pair"]),
    "out is a file": (["--out", "afile"], ["--out", "'afile' is an existing file"]),
    "out below a file": (["--out", "afile/run"], ["--out", "is a file"]),
    "missing data dir": (["--task", "rte", "--data-dir", "nope"], ["--data-dir", "no such directory", "train.tsv"]),
    "data dir lacks files": (["--task", "rte", "--data-dir", "."], ["--data-dir", "lacks train.tsv, dev.tsv"]),
    "data dir for a generated task": (["--data-dir", "."], ["--data-dir", "generated"]),
    "negative lr": (["--lr", "-1"], ["--lr", "> 0", "-1.0"]),
    "zero batch size": (["--batch-size", "0"], ["--batch-size", ">= 1"]),
    "warmup ratio 1": (["--warmup-ratio", "1"], ["--warmup-ratio", "< 1"]),
    "missing config file": (["--config", "nope.json"], ["--config", "no such file 'nope.json'"]),
    "bad device": (["--device", "gpu0"], ["--device", "'gpu0'", "cpu"]),
    "argparse type error": (["--batch-size", "many"], ["--batch-size", "invalid int value"]),
    "argparse unknown flag": (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
}


@pytest.mark.parametrize("mistake", sorted(FINETUNE_MISTAKES))
def test_finetune_mistake_is_one_line_exit_2_and_writes_nothing(mistake, workdir, capsys):
    args, needles = FINETUNE_MISTAKES[mistake]
    if "--out" not in args:
        args = [*args, "--out", "run"]
    before = files_under(workdir)
    status, _, err = run_cli(["finetune", *args], capsys)
    if mistake.startswith("argparse"):  # argparse prints its usage line, then the error line
        assert status == 2 and "Traceback" not in err and needles[0] in err.splitlines()[-1]
    else:
        assert_usage_error(status, err, *needles)
    assert files_under(workdir) == before


def test_finetune_config_file_with_unknown_setting(workdir, capsys):
    (workdir / "c.json").write_text(json.dumps({"lr": 1e-5, "learning_rate": 1e-5}))
    status, _, err = run_cli(["finetune", "--config", "c.json", "--out", "run"], capsys)
    assert_usage_error(status, err, "unknown finetune settings ['learning_rate']")
    assert not (workdir / "run").exists()


def test_finetune_hub_task_without_network_names_data_dir_and_files_at_once(workdir, capsys, hub_unreachable,
                                                                             monkeypatch):
    from maskedbert.data import tasks

    hub_loads = []
    monkeypatch.setattr(tasks, "_load_hub", lambda *args, **kwargs: hub_loads.append(args))
    status, _, err = run_cli(["finetune", "--task", "mnli", "--out", "run"], capsys)
    assert hub_loads == []  # no retry loop: datasets is never asked
    assert_usage_error(status, err, "--data-dir", "mnli", "unreachable", "train.tsv", "dev_matched.tsv")
    assert "data_dir" not in err
    assert files_under(workdir) == ["afile"]


def test_finetune_hub_model_without_network(workdir, capsys, hub_unreachable):
    status, _, err = run_cli(["finetune", "--model", "bert-base-uncased", "--out", "run"], capsys)
    assert_usage_error(status, err, "--model", "'bert-base-uncased'", "unreachable", "offline-minilm", "tiny-bert")
    assert files_under(workdir) == ["afile"]


def test_finetune_hub_task_in_offline_mode_fails_fast_with_the_same_advice(workdir, capsys, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def not_cached(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", not_cached)
    status, _, err = run_cli(["finetune", "--task", "rte", "--out", "run", "--max-steps", "1"], capsys)
    assert_usage_error(status, err, "--data-dir", "'rte'", "train.tsv, dev.tsv")
    assert files_under(workdir) == ["afile"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("args", [["--device", "cuda"], ["--precision", "fp16"]])
def test_finetune_cuda_on_a_cpu_machine(args, workdir, capsys):
    status, _, err = run_cli(["finetune", *args, "--out", "run"], capsys)
    assert_usage_error(status, err, args[0])
    assert files_under(workdir) == ["afile"]


# ---- example ------------------------------------------------------------------------------------------
EXAMPLE_MISTAKES = {
    "sparsity 1": (["--sparsity", "1"], ["--sparsity", "0 <= sparsity < 1", "1.0"]),
    "negative sparsity": (["--sparsity", "-0.1"], ["--sparsity", "-0.1"]),
    "out is a file": (["--out", "afile"], ["--out", "existing file"]),
    "negative steps": (["--steps", "-1"], ["--steps", ">= 0"]),
    "zero width": (["--in-features", "0"], ["--in-features", ">= 1"]),
    "bad device": (["--device", "tpu"], ["--device", "'tpu'"]),
}


@pytest.mark.parametrize("mistake", sorted(EXAMPLE_MISTAKES))
def test_example_mistake_is_one_line_exit_2_and_writes_nothing(mistake, workdir, capsys):
    args, needles = EXAMPLE_MISTAKES[mistake]
    status, out, err = run_cli(["example", *args, "--steps" if "--steps" not in args else "--seed", "1"], capsys)
    assert_usage_error(status, err, *needles)
    assert "step" not in out  # refused before training
    assert files_under(workdir) == ["afile"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_example_cuda_on_a_cpu_machine(workdir, capsys):
    status, _, err = run_cli(["example", "--device", "cuda", "--out", "run"], capsys)
    assert_usage_error(status, err, "--device", "'cuda'", "--device cpu")
    assert files_under(workdir) == ["afile"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_example_triton_backend_on_cpu_without_the_interpreter(workdir, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    status, out, err = run_cli(["example", "--backend", "triton", "--steps", "1"], capsys)
    assert_usage_error(status, err, "--backend", "'triton'", "TRITON_INTERPRET=1")
    assert "step" not in out


def test_example_runs_and_writes_its_results(workdir, capsys):
    status, out, err = run_cli(["example", "--steps", "3", "--in-features", "16", "--out-features", "8",
                                "--batch", "8", "--device", "cpu", "--out", "ex"], capsys)
    assert status == 0, err
    assert json.loads((workdir / "ex" / "results.json").read_text())["device"] == "cpu"


# ---- top level ----------------------------------------------------------------------------------------
def test_unknown_command(capsys):
    status, _, err = run_cli(["nosuchcommand"], capsys)
    assert status == 2 and "Traceback" not in err
    assert "unknown command 'nosuchcommand'" in err and "finetune" in err


def test_version(capsys):
    from maskedbert import __version__

    status, out, _ = run_cli(["--version"], capsys)
    assert status == 0 and out.startswith(f"maskedbert {__version__} (torch ")


def test_debug_variable_shows_the_traceback_of_a_usage_error(workdir, capsys, monkeypatch):
    monkeypatch.setenv("MASKEDBERT_DEBUG", "1")
    status, _, err = run_cli(["finetune", "--task", "nosuchtask", "--out", "run"], capsys)
    assert status == 2 and "Traceback" in err and "UsageError" in err
    assert err.strip().splitlines()[-1].startswith("maskedbert finetune: error: --task")


def test_internal_error_keeps_its_traceback_and_says_it_is_a_bug(workdir, capsys, monkeypatch):
    def broken(config):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(finetune, "run_finetune", broken)
    status, _, err = run_cli(["finetune", "--out", "run"], capsys)
    assert status == 1
    assert "Traceback" in err and "RuntimeError: something inside broke" in err
    assert "this is a bug in maskedbert" in err.splitlines()[-1] and "report" in err.splitlines()[-1]


def test_ctrl_c_before_a_checkpoint_says_so_exit_130(workdir, capsys, monkeypatch):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "run_finetune", interrupted)
    status, _, err = run_cli(["finetune", "--out", "run"], capsys)
    assert status == 130 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "no checkpoint was written yet in run" in lines[0]


def test_ctrl_c_after_a_checkpoint_resumes_with_the_same_command(workdir, capsys, monkeypatch, one_torch_thread):
    from maskedbert.train import Trainer

    command = ["finetune", "--model", "tiny-bert", "--task", "synthetic-pair", "--train-limit", "32",
               "--dev-limit", "16", "--batch-size", "8", "--max-steps", "3", "--checkpoint-every", "1",
               "--no-progress", "--out", "run"]
    save = Trainer.save_checkpoint

    def save_then_interrupt(self):
        save(self)
        if self.global_step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)
    status, _, err = run_cli(command, capsys)
    assert status == 130 and "Traceback" not in err
    assert "run/checkpoint.pt" in err and "run the same command again to resume" in err
    status, out, err = run_cli(command, capsys)  # the resumed run finishes from step 1
    assert status == 0, err
    assert json.loads(out)["task"] == "synthetic-pair"
    assert json.loads((workdir / "run" / "result.json").read_text())["steps"] == 3


# ---- help ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [finetune.build_parser, example.build_parser], ids=["finetune", "example"])
def test_help_shows_every_default_and_choices(build):
    parser = build()
    formatter = HelpFormatter(parser.prog)
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue  # positionals, flags without a value (off unless given), --help
        text = " ".join(formatter._format_action(action).split())  # undo line wrapping
        assert "default: " in text, action.option_strings
        if action.choices:
            assert all(str(choice) in text for choice in action.choices), action.option_strings


def test_finetune_help_lists_tasks_and_models(capsys):
    from maskedbert.data import list_tasks

    status, out, _ = run_cli(["finetune", "--help"], capsys)
    assert status == 0
    flat = " ".join(out.split()).replace("- ", "-")  # undo argparse's line wrapping
    assert all(task in flat for task in list_tasks())
    assert "offline-minilm" in flat and "tiny-bert" in flat and "(default: synthetic-pair)" in flat


HEAVY_MODULES = ("torch", "transformers", "datasets", "matplotlib", "safetensors")


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_is_fast_because_nothing_heavy_loads(command):
    """--help in a fresh interpreter leaves torch, transformers, datasets, matplotlib and safetensors unloaded
    (seconds of import each): the parsers and their choices come from torch-free modules."""
    code = ("import sys\nfrom maskedbert import cli\n"
            f"try:\n    cli.main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
    assert "usage: maskedbert " + command in proc.stdout


def test_hub_check_is_one_quick_connection(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    connections = []
    real_connect = _hub.socket.create_connection

    def connect(address, timeout=None, *args, **kwargs):
        connections.append((address, timeout))
        return real_connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(_hub.socket, "create_connection", connect)
    reason = _hub._unreachable_reason("http://127.0.0.1:9")  # the discard port: nothing listens there
    assert reason and "127.0.0.1:9" in reason
    assert connections == [(("127.0.0.1", 9), _hub._CONNECT_TIMEOUT_S)]  # one attempt, a short timeout, no retry
    assert _hub._CONNECT_TIMEOUT_S <= 5


def test_flags_given_override_the_config_file_even_when_they_equal_the_default():
    from maskedbert.experiments.cli_common import explicit_args

    parser = finetune.build_parser()
    given = explicit_args(parser, ["--config", "c.json", "--lr", "2e-5", "--no-progress"])
    assert given == {"config": "c.json", "lr": 2e-5, "progress": False}
    assert parser.parse_args([]).lr == finetune.FinetuneConfig().lr  # the real defaults are back afterwards


def test_finetune_config_file_values_are_checked_like_flags(workdir, capsys):
    (workdir / "c.json").write_text(json.dumps({"precision": "fp8", "output_dir": "run"}))
    status, _, err = run_cli(["finetune", "--config", "c.json"], capsys)
    assert_usage_error(status, err, "--precision", "'fp8'", "bf16")
    assert files_under(workdir) == ["afile", "c.json"]


@pytest.mark.parametrize("value", [1.0, 1, -0.01, float("nan"), True, "0.5", None])
def test_one_sparsity_rule_for_mask_config_and_commands(value):
    from maskedbert.config import SPARSITY_RULE, MaskConfig, check_sparsity
    from maskedbert.errors import UsageError

    with pytest.raises(UsageError, match="0 <= sparsity < 1"):
        check_sparsity(value, "--sparsity")
    with pytest.raises(UsageError, match=r"MaskConfig\.sparsity must be " + SPARSITY_RULE.replace("(", r"\(")
                       .replace(")", r"\)")):
        MaskConfig(sparsity=value)


def test_sparsity_rule_accepts_zero_up_to_below_one():
    from maskedbert.config import MaskConfig, check_sparsity

    assert check_sparsity(0) == 0.0 and isinstance(check_sparsity(0), float)
    assert check_sparsity(0.999) == 0.999
    assert MaskConfig(sparsity=0.9).sparsity == 0.9
