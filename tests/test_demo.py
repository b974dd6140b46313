"""`maskedbert demo --quick` end to end through the CLI."""
import csv
import json
import os

import pytest

from maskedbert import cli


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "demo")
    os.makedirs(os.path.join(out, "cells"))
    with open(os.path.join(out, "cells", "stale-cell.json"), "w") as f:
        f.write("{}")  # a stale cell from an earlier run must not leak into the table
    assert cli.main(["demo", "--quick", "--out", out, "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "tiny random BERT" in printed and "ood_accuracy" in printed
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["pipeline"], r["loss"]) for r in rows}
    assert got == {("finetune", "ce"), ("finetune", "poe"), ("ft_prune", "ce"), ("ft_prune", "poe"),
                   ("ft_prune", "reweight"), ("ft_prune", "conf_reg")}
    for r in rows:
        expected = 0.5 if r["pipeline"] == "ft_prune" else 0.0
        assert abs(float(r["measured_sparsity"]) - expected) < 1e-3
    for name in ("results.md", "srnet_sparsity.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["demo"]["quick"] is True and config["srnet_config"]["seed"] == 1
