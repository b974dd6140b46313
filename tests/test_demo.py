"""`maskedbert demo --quick` end to end: outputs, fixed work (equal tables on a busy CPU), reruns."""
import csv
import json
import os
import threading

import pytest

from maskedbert import cli
from maskedbert.experiments import demo

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # end-to-end demo runs


def _rows(out):
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo") / "demo")
    assert cli.main(["demo", "--quick", "--out", out, "--threads", "1", "--no-progress"]) == 0
    return out


def test_demo_quick_end_to_end(quick_run, capsys):
    out = quick_run
    rows = _rows(out)
    got = {(r["pipeline"], r["loss"]) for r in rows}
    assert got == {("finetune", "ce"), ("ft_prune", "ce"), ("ft_prune", "poe"), ("ft_prune", "reweight"),
                   ("ft_prune", "conf_reg"), ("mask_pretrained", "poe")}
    for r in rows:
        expected = 0.5 if r["pipeline"] != "finetune" else 0.0
        assert abs(float(r["measured_sparsity"]) - expected) < 1e-3
    for name in ("results.md", "demo.png", "config.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["demo"]["quick"] is True and config["demo"]["settings"] == demo.QUICK_SETTINGS
    assert {v["loss"] for v in config["verdicts"]} == {"poe", "reweight", "conf_reg"}
    seed_dir = os.path.join(out, "seed-0")
    for r in rows:  # every mask-training cell records its per-step flips; the dense row has none
        if r["pipeline"] == "finetune":
            assert r["shock_steps"] == ""
            continue
        cell = json.load(open(os.path.join(seed_dir, "cells", f"{r['pipeline']}-mask-{r['loss']}-s0.50.json")))
        steps = demo.QUICK_SETTINGS["prune_steps"]
        assert len(cell["flips"]) == len(cell["losses"]) == steps
        assert all(0.0 <= f <= 1.0 for f in cell["flips"])
        assert cell["shock_steps"] == pytest.approx(sum(f > demo.SHOCK_FLIP for f in cell["flips"]) / steps)
        assert float(r["shock_steps"]) == pytest.approx(cell["shock_steps"], abs=1e-6)  # the CSV's 6 decimals
    assert not os.path.exists(os.path.join(seed_dir, "checkpoints"))  # removed after a successful run
    assert os.path.isdir(os.path.join(seed_dir, "masks")) and os.path.isdir(os.path.join(seed_dir, "cells"))


def test_rerun_reuses_finished_cells_and_says_so(quick_run, capsys, monkeypatch):
    from maskedbert import pruning

    before = _rows(quick_run)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(pruning, "train_steps", no_training)
    capsys.readouterr()
    assert cli.main(["demo", "--quick", "--out", quick_run, "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, skipped") == 6
    assert _rows(quick_run) == before


def test_two_runs_print_the_same_table_on_a_busy_machine(tmp_path, capsys):
    """Fixed work: a competing busy thread makes the run slower, never different."""
    argv = ["demo", "--quick", "--threads", "1", "--no-progress", "--no-pipeline-c"]
    assert cli.main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    stop = threading.Event()

    def busy():
        x = 0
        while not stop.is_set():
            x = (x * 31 + 7) % 1000003

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        assert cli.main([*argv, "--out", str(tmp_path / "busy")]) == 0
    finally:
        stop.set()
        worker.join()
    quiet, busy_rows = _rows(tmp_path / "quiet"), _rows(tmp_path / "busy")
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in quiet] == \
        [{k: v for k, v in r.items() if k not in drop} for r in busy_rows]
    with open(tmp_path / "quiet" / "results.md") as a, open(tmp_path / "busy" / "results.md") as b:
        assert a.read() == b.read()


def test_fresh_starts_over_and_bad_arguments(tmp_path):
    from maskedbert.errors import UsageError

    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(UsageError, match="--out"):
        demo.main(["--out", str(target)])
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "0,0"])
    with pytest.raises(UsageError, match="--threads"):
        demo.main(["--threads", "0"])


def test_summary_and_verdicts_from_rows():
    def row(seed, pipeline, loss, id_acc, non_ent):
        return {"seed": seed, "pipeline": pipeline, "loss": loss, "id_accuracy": id_acc, "ood_accuracy": 0.5,
                "ood_non_entailment": non_ent, "ood_entailment": 1 - non_ent, "measured_sparsity": 0.5,
                "mask_change": 0.1}

    rows = []
    for seed, poe_non_ent in ((0, 0.4), (1, 0.1)):
        rows += [row(seed, "finetune", "ce", 0.9, 0.0), row(seed, "ft_prune", "ce", 0.88, 0.2),
                 row(seed, "ft_prune", "poe", 0.86, poe_non_ent)]
    table = demo.summarize(rows)
    poe = next(e for e in table if e["loss"] == "poe")
    assert poe["seeds"] == 2 and poe["ood_non_entailment"] == pytest.approx(0.25)
    assert poe["ood_non_entailment_std"] == pytest.approx(0.2121, abs=1e-4)
    checks = {c["seed"]: c for c in demo.verdicts(rows)}
    assert checks[0]["holds"] and not checks[1]["holds"]  # seed 1: below the CE mask OOD
    rows[2]["id_accuracy"] = 0.5  # far below 95% of the dense model's
    assert not {c["seed"]: c for c in demo.verdicts(rows)}[0]["keeps_id"]
    assert "+-" in demo.table_text(table)


def test_demo_makes_idle_openmp_workers_sleep_before_torch_loads(tmp_path):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads: the demo must set it before any torch import."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from maskedbert.experiments import demo\n"
            "assert 'torch' not in sys.modules, 'importing the demo loaded torch'\n"
            "seen = {}\n"
            "demo._run = lambda args: seen.update(policy=os.environ.get('OMP_WAIT_POLICY')) or 0\n"
            f"assert demo.main(['--out', {str(tmp_path / 'out')!r}]) == 0\n"
            "print(seen['policy'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PASSIVE"
