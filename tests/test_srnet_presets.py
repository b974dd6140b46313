"""The Liu et al. (2022) presets: every value sourced, names known, numbers in range, helpers exact."""
import dataclasses
import re
import subprocess
import sys

import pytest

from maskedbert.errors import UsageError
from maskedbert.experiments.srnet import presets as sp
from maskedbert.experiments.srnet import command as srnet_command

PIPELINE_METHODS = {"ft_prune": {"imp", "mask"}, "prune_ft": {"imp", "mask"}, "mask_pretrained": {"mask"}}
LOSSES = {"ce", "poe", "reweight", "conf_reg"}
# a source cites the paper or a reference file with a line number
SOURCE = re.compile(r"paper Sec\. \d|\.(sh|py|md):\d+")
FRACTIONS = {"lr", "lr_scores", "threshold", "select_after", "imp_per_round", "weight_decay", "adam_eps"}
POSITIVE_INTS = {"batch_size", "max_length", "eval_every", "reset_every"}
EPOCHS = {"ft_epochs", "prune_epochs", "imp_round_epochs", "final_sparsity_epoch"}


def all_settings():
    for name, preset in sp.SRNET_PRESETS.items():
        for path, setting in sp.iter_settings(preset):
            yield name, path, setting


def test_presets_cover_the_papers_tasks_and_pipelines():
    assert set(sp.SRNET_PRESETS) == {"mnli", "qqp", "fever"}
    for preset in sp.SRNET_PRESETS.values():
        for pipeline, methods in PIPELINE_METHODS.items():
            assert set(preset[pipeline]) == methods
        assert {"common", "finetune", "gsi"} <= set(preset)


def test_every_leaf_is_a_setting_with_a_source():
    count = 0
    for name, path, setting in all_settings():
        assert isinstance(setting, sp.Setting), (name, path)
        assert SOURCE.search(setting.source), f"{name} {'/'.join(path)}: source {setting.source!r} cites no line"
        count += 1
    assert count > 200  # three full presets, not a stub


def test_names_are_known_and_config_names_are_srnet_fields():
    from maskedbert.experiments.srnet.config import SRNetConfig

    fields = {f.name for f in dataclasses.fields(SRNetConfig)}
    assert set(sp.CONFIG_NAMES) <= fields
    assert not set(sp.NEW_NAMES) & fields, "a name listed as new already is an SRNetConfig field"
    for name, path, _ in all_settings():
        assert path[-1] in sp.KNOWN_NAMES, f"{name}: unknown setting name {path[-1]!r}"


def test_numbers_are_in_range():
    for name, path, setting in all_settings():
        key, value = path[-1], setting.value
        where = f"{name} {'/'.join(path)} = {value!r}"
        if key in FRACTIONS:
            assert isinstance(value, float) and 0.0 <= value < 1.0, where
        elif key in POSITIVE_INTS:
            assert isinstance(value, int) and value >= 1, where
        elif key in EPOCHS:
            assert isinstance(value, (int, float)) and 0 < value <= 10, where
        elif key == "warmup_steps":
            assert isinstance(value, int) and 0 <= value <= 10_000, where
        elif key in ("sparsities", "imp_levels"):
            assert value and all(0.0 < s < 1.0 for s in value) and list(value) == sorted(value), where
        elif key == "initial_sparsity":
            assert value == "target" or 0.0 < value < 1.0, where
        elif key == "ft_epochs_by_loss":
            assert set(value) <= LOSSES and all(1 <= e <= 10 for e in value.values()), where


def test_known_values_match_the_reference_scripts():
    mnli, qqp, fever = (sp.SRNET_PRESETS[t] for t in ("mnli", "qqp", "fever"))
    # dense fine-tuning (scripts/full_bert/std_train/*.sh)
    assert [p["finetune"]["lr"].value for p in (mnli, qqp, fever)] == [5e-5, 2e-5, 2e-5]
    assert [p["finetune"]["warmup_steps"].value for p in (mnli, qqp, fever)] == [3600, 3400, 0]
    assert [p["finetune"]["eval_every"].value for p in (mnli, qqp, fever)] == [1000, 1000, 500]
    assert mnli["finetune"]["ft_epochs_by_loss"].value == {"ce": 3, "poe": 5, "conf_reg": 5, "reweight": 3}
    assert qqp["common"]["select_metric"].value == "f1" and qqp["common"]["clip_per_parameter"].value
    # pipeline (a): IMP without rewinding, pruning before the first step; mask training with a masked, frozen head
    imp_a = mnli["ft_prune"]["imp"]["prune"]
    assert (imp_a["rewind"].value, imp_a["first_step"].value, imp_a["prune_epochs"].value) == ("none", "prune", 5)
    assert imp_a["imp_levels"].value == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    mask_a = mnli["ft_prune"]["mask"]["prune"]
    assert (mask_a["mask_classifier"].value, mask_a["train_classifier"].value) == (True, False)
    assert (mask_a["initial_sparsity"].value, mask_a["select_after"].value) == ("target", 0.7)
    # pipeline (b): the search uses PoE; the subnetwork restarts from the pre-trained weights
    assert mnli["prune_ft"]["imp"]["prune"]["search_loss"].value == "poe"
    assert mnli["prune_ft"]["imp"]["finetune"]["rewind"].value == "start"
    # pipeline (c): best over the whole run, head masked and frozen
    c = fever["mask_pretrained"]["mask"]["prune"]
    assert (c["select_after"].value, c["mask_classifier"].value, c["train_classifier"].value) == (0.0, True, False)
    gsi = qqp["gsi"]
    assert (gsi["initial_sparsity"].value, gsi["sparsities"].value, gsi["final_sparsity_epoch"].value) == (0.7, (0.9,), 7)
    assert gsi["score_init"].value == "magnitude_soft"


def test_phase_values_merge_common_settings():
    phases = sp.phase_values("MNLI", "prune_ft", "imp")
    assert set(phases) == {"prune", "finetune"}
    assert phases["finetune"]["ft_epochs"] == 5 and phases["finetune"]["batch_size"] == 32
    assert phases["prune"]["warmup_steps"] == 0  # IMP search: no warmup, unlike the fine-tuning after it
    assert sp.phase_values("qqp", "gsi", "mask")["prune"]["select_metric"] == "f1"
    with pytest.raises(UsageError, match="mask_pretrained/imp"):
        sp.phase_values("mnli", "mask_pretrained", "imp")
    with pytest.raises(UsageError, match="--preset.*'sst2'.*fever, mnli, qqp"):
        sp.get_preset("sst2")


def test_epochs_to_steps_follows_the_reference_dataloader():
    # MNLI: 392,702 training pairs, batch 32 -> 12,272 batches (the last one partial)
    assert sp.epochs_to_steps(1, 392_702, 32) == 12_272
    assert sp.epochs_to_steps(5, 392_702, 32) == 61_360
    assert sp.imp_round_steps(5, 392_702, 32) == 6_136  # int(t_total / 10)
    assert sp.epochs_to_steps(0.5, 10, 4) == 1  # int(3 * 0.5): fractional epochs truncate
    for bad in ((0, 10, 4), (1, 0, 4), (1, 10, True), (-1.0, 10, 4)):
        with pytest.raises(ValueError):
            sp.epochs_to_steps(*bad)


def test_describe_presets_rows():
    rows = sp.describe_presets(["qqp"])
    assert rows and {r["preset"] for r in rows} == {"qqp"}
    assert set(rows[0]) == {"preset", "section", "setting", "value", "source"}
    lookup = {(r["section"], r["setting"]): r for r in rows}
    assert lookup[("finetune", "warmup_steps")]["value"] == "3400"
    assert lookup[("common", "ood_tasks")]["value"] == "paws-qqp:dev,paws-wiki:test"  # README.md:64-67
    assert lookup[("ft_prune/imp/prune", "rewind")]["source"].startswith("scripts/imp/prune_after_ft/std/qqp.sh")
    assert len(sp.describe_presets()) == sum(1 for _ in all_settings())


def test_presets_module_does_not_import_torch():
    code = "import sys, maskedbert.experiments.srnet.presets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the presets as srnet runs them -------------------------------------------------------------------
OFFLINE = ["--task", "synthetic-nli", "--ood-task", "hans", "--model", "tiny-bert", "--train-size", "64",
           "--dev-size", "16", "--challenge-per-cell", "3"]


def test_preset_sets_the_papers_values_and_flags_win(tmp_path):
    from maskedbert.experiments.srnet import options as srnet

    cfg = srnet.parse_args(["--preset", "mnli", "--out", str(tmp_path), *OFFLINE])
    assert (cfg.lr, cfg.lr_scores, cfg.warmup_steps, cfg.batch_size, cfg.max_length) == (5e-5, 5e-5, 3600, 32, 128)
    assert (cfg.ft_epochs, cfg.prune_epochs, cfg.reset_every, cfg.eval_every) == (3, 5, 1000, 1000)
    assert cfg.ft_epochs_by_loss["poe"] == 5 and cfg.select_after == 0.7 and cfg.preset == "mnli"
    assert cfg.for_cell("mask_pretrained", "mask").select_after == 0.0
    imp = cfg.for_cell("ft_prune", "imp")
    assert (imp.prune_epochs, imp.warmup_steps) == (0.5, 0)
    qqp = srnet.parse_args(["--preset", "qqp", *OFFLINE])
    assert qqp.clip_mode == "per_parameter" and qqp.ood_task == "hans"  # the flag wins over paws-qqp
    given = srnet.parse_args(["--preset", "mnli", "--warmup-steps", "5", "--prune-epochs", "1", *OFFLINE])
    assert given.warmup_steps == 5 and given.for_cell("ft_prune", "imp").warmup_steps == 5
    assert given.for_cell("ft_prune", "imp").prune_epochs == 1


def test_preset_dry_run_resolves_epochs_per_pipeline(tmp_path):
    import json
    import os

    assert srnet_command.main(["--preset", "mnli", "--out", str(tmp_path), "--dry-run", "--losses", "ce,poe", *OFFLINE]) == 0
    config = json.load(open(os.path.join(tmp_path, "config.json")))
    assert config["resolved"]["ft_steps"] == {"ce": 6, "poe": 10}  # ceil(64 / 32) * 3 and * 5 epochs
    assert config["protocols"]["ft_prune/mask"]["prune_steps"] == 10  # 5 epochs
    assert config["protocols"]["ft_prune/imp"]["prune_steps"] == 1  # 0.5 epochs: a tenth of IMP's 5
    assert config["protocols"]["mask_pretrained/mask"]["select_after"] == 0.0


def test_unknown_preset_and_list_presets(capsys):
    from maskedbert.errors import UsageError
    from maskedbert.experiments.srnet import options as srnet

    with pytest.raises(UsageError, match="--preset.*fever, mnli, qqp"):
        srnet.parse_args(["--preset", "sst2"])
    assert srnet_command.main(["--list-presets"]) == 0
    table = capsys.readouterr().out
    assert "mnli" in table and "5e-05 / 3600" in table and "per_parameter" in table
