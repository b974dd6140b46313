"""The published settings of Liu et al. (NeurIPS 2022) for `maskedbert srnet --preset NAME`.

Data and small helpers only (no torch): one preset per task (mnli, qqp, fever). Every value is a
`Setting(value, source)`; a source is "paper Sec. X" or a file:line of the reference code
llyx97/sparse-and-robust-PLM at commit 773dab1 (scripts/... are its run scripts, the other paths its
Python). The paper's appendix table of hyperparameters could not be read here, so the numbers come
from the scripts the README names for each experiment; where the paper states a protocol the source
says so. docs/reference_srnet_facts.md explains each value and every place the reference deviates.

Layout: SRNET_PRESETS[task][section][...]:
  "common"           task, data, model, batch size, length, optimizer, sparsities, selection metric
  "finetune"         the dense fine-tuning every pipeline starts from (or uses as the teacher)
  "ft_prune"         pipeline (a): {"imp": {"prune": ...}, "mask": {"prune": ...}}
  "prune_ft"         pipeline (b): {"imp": {"prune": ..., "finetune": ...}, "mask": {"prune": ..., "finetune": ...}}
  "mask_pretrained"  pipeline (c): {"mask": {"prune": ...}}
  "gsi"              gradual sparsity increase (Sec. 3.6.2), mask training after fine-tuning
Epochs are the reference's unit; `epochs_to_steps` converts them the reference's way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from maskedbert.errors import UsageError
from maskedbert.experiments.tables import text_table

REFERENCE = "llyx97/sparse-and-robust-PLM@773dab1"


@dataclass(frozen=True)
class Setting:
    value: object
    source: str


# names that are SRNetConfig fields (same meaning); the test checks they exist there
CONFIG_NAMES = ("task", "ood_task", "ood_split", "model", "batch_size", "max_length", "sparsities", "lr",
                "lr_scores", "threshold", "initial_sparsity", "reset_every", "scope", "imp_per_round",
                "imp_amount_of", "train_classifier", "prune_start", "rewind_classifier", "weight_decay",
                "adam_eps", "max_grad_norm", "ft_epochs", "ft_epochs_by_loss", "prune_epochs",
                "warmup_steps", "eval_every", "select", "select_after", "rewind", "mask_classifier",
                "score_init", "bias_model", "bias_label_order", "teacher_label_order", "select_metric",
                "ft_select", "ft_eval_every", "imp_schedule", "imp_search_loss", "prune_ft_ticket", "prune_ft_masks",
                "clip_mode", "oracle_data", "oracle_task", "oracle_split", "oracle_repeat", "extra_ood", "oracle_extra")
# names srnet has no field for (kept as documentation of the reference's protocol)
NEW_NAMES = ("ood_tasks", "seeds", "clip_per_parameter", "imp_round_epochs", "imp_levels",
             "final_sparsity_epoch", "search_loss", "mask_from", "first_step")
KNOWN_NAMES = frozenset(CONFIG_NAMES + NEW_NAMES)

_S = Setting
_TA = "hg_transformers/training_args.py"
_IMP = "hg_transformers/trainer_imp.py"
_MT = "hg_transformers/mask_trainer.py"
_MRG = "mask_run_glue.py"


def _task_numbers(t: dict) -> dict:
    """Build one preset from the per-task numbers (value, script line) gathered from the scripts."""
    task, d = t["task"], t["dirs"]
    ft, imp_a, lt_p, lt_r = d["ft"], d["imp_a"], d["lt_prune"], d["lt_retrain"]
    mask_a, mask_r, mask_c, gsi = d["mask_a"], d["mask_retrain"], d["mask_c"], d["gsi"]
    lr, warm, every = t["lr"], t["warmup"], t["every"]
    clip_src = t["clip_src"]
    common = {
        "task": _S(task, f"{ft}:1 (TASK_NAME)"),
        "ood_task": _S(t["ood"][0][0], t["ood_src"]),
        "ood_split": _S(t["ood"][0][1], t["ood_src"]),
        "ood_tasks": _S(t["ood"], t["ood_src"]),
        "extra_ood": _S(tuple(f"{task}:{split}" for task, split in t["ood"][1:]), t["ood_src"]),
        "model": _S("bert-base-uncased", f"{ft}:7"),
        "batch_size": _S(32, f"{ft}:21"),
        "max_length": _S(128, f"{ft}:19"),
        "seeds": _S((1,), f"{ft}:9"),
        "sparsities": _S((0.2, 0.5, 0.7, 0.9), f"{mask_a}:4 (zero_rate; one script per sparsity: 0.2.sh, 0.5.sh, 0.7.sh, 0.9.sh)"),
        "select_metric": _S(t["metric"][0], t["metric"][1]),
        "weight_decay": _S(0.0, f"{_TA}:69 (default; no script passes --weight_decay)"),
        "adam_eps": _S(1e-8, f"{_TA}:70 (default; hg_transformers/trainer.py:322 passes it to AdamW)"),
        "max_grad_norm": _S(1.0, f"{_TA}:71 (default)"),
        "clip_per_parameter": _S(t["per_param_clip"], clip_src),
        "scope": _S("layer", f"{imp_a}:32 (--prune_global_imp false); {mask_a}:7 (global_prune=false)"),
        "bias_model": _S(t["bias_file"], f"scripts/full_bert/robust_train/poe/{task}.sh:{t['bias_line']} "
                                         "(--bias_dir; the file shipped in the reference repository)"),
        # the reference's files order their columns by its processors' get_labels()
        "bias_label_order": _S(t["label_order"], t["label_order_src"]),
        "teacher_label_order": _S(t["label_order"], t["label_order_src"] + "; run_glue.py:626-633 writes the "
                                                    "teacher's probs.npy in that order"),
    }
    finetune = {
        "ft_epochs": _S(3, f"{ft}:3"),
        "ft_epochs_by_loss": _S(t["ft_by_loss"], t["ft_by_loss_src"]),
        "lr": _S(lr, f"{ft}:4"),
        "warmup_steps": _S(warm, f"{ft}:5"),
        "eval_every": _S(every, f"{ft}:{t['ft_every_line']} (--logging_steps with --evaluate_during_training)"),
        "select": _S("best", "hg_transformers/trainer.py:601 (best dev metric over the whole run, strict >: "
                              "ties keep the earlier step); run_glue.py:594 reloads it for the final eval"),
        "select_after": _S(0.0, "hg_transformers/trainer.py:601 (no start-step condition in dense training)"),
        "ft_select": _S("best", "hg_transformers/trainer.py:601; run_glue.py:594 (the best checkpoint is the model "
                                "used downstream, and the conf-reg teacher's predictions, run_glue.py:626-633)"),
        "ft_eval_every": _S(every, f"{ft}:{t['ft_every_line']} (--logging_steps; hg_transformers/trainer.py:566 "
                                   "evaluates at its multiples only)"),
    }
    imp_rounds = "0.1, 0.2, ..., 0.9 of the original weights: " + f"{_IMP}:439 prunes 1/(10-k) of the remaining"
    ft_prune_imp = {
        "prune_start": _S("ce", f"{imp_a}:6 (the CE fine-tuned model, epoch3_lr...)"),
        "prune_epochs": _S(t["imp_epochs"], f"{imp_a}:3 (the whole IMP budget, all rounds together: "
                                             f"{_IMP}:556)"),
        "imp_round_epochs": _S(t["imp_epochs"] / 10, f"{_IMP}:560 (a round is int(t_total / 10) steps)"),
        "lr": _S(lr, f"{imp_a}:4"),
        "warmup_steps": _S(0, f"{_TA}:78 (default; IMP scripts pass no --warmup_steps)"),
        "imp_per_round": _S(0.1, f"{_IMP}:439"),
        "imp_amount_of": _S("original", f"{_IMP}:439"),
        "imp_levels": _S(tuple(round(0.1 * r, 1) for r in range(1, 10)), imp_rounds),
        "first_step": _S("prune", f"{_IMP}:625 (prunes 10% before the first training step)"),
        "rewind": _S("none", f"{imp_a}: no --weight_rewind (run_glue.py:195 default False); paper Sec. 2.2.1"),
        "mask_classifier": _S(False, f"{_IMP}:485-496 (Q, K, V, attention output, FFN in/out, pooler only); "
                                     "the paper says the classifier is pruned (Sec. 2.2.1)"),
        "eval_every": _S(every, f"{imp_a}:28 (--logging_steps)"),
        "select": _S("last", f"{_IMP}:727-733 (each level: the dev result just before the next prune)"),
        "search_loss": _S("same", f"scripts/imp/prune_after_ft/poe/{task}.sh:5 (PoE; the std/ script: CE)"),
        "imp_schedule": _S("budget", f"{_IMP}:433 (a fresh AdamW and linear schedule over t_total, the whole "
                                     f"budget, at each prune; :556)"),
        "clip_mode": _S("global", f"{_IMP}:681 (IMP clips the global norm whatever --global_grad_clip says)"),
    }
    ft_prune_mask = {
        "prune_start": _S("ce", f"{mask_a}:{t['mask_a_model_line']} (model_dir = the CE fine-tuned model)"),
        "prune_epochs": _S(t["mask_epochs"], f"{mask_a}:3"),
        "lr_scores": _S(lr, f"{mask_a}:{t['mask_a_lr_line']} (one AdamW for the scores: {_MT}:352)"),
        "warmup_steps": _S(warm, f"{mask_a}:6"),
        "threshold": _S(0.01, f"{_MRG}:236"),
        "score_init": _S("magnitude", f"{mask_a}:{t['mask_a_init_line']}; masking/maskers.py:178 (2 * threshold kept, 0 pruned)"),
        "initial_sparsity": _S("target", "masking/sparsity_control.py:98-102 (no --init_sparsity: start = target, "
                                         "fixed sparsity)"),
        "reset_every": _S(every, f"{mask_a}:5; {_MT}:636 and :654-655 (reset at every logging step)"),
        "eval_every": _S(every, f"{mask_a}:5; {_MT}:636"),
        "select": _S("best", f"{_MT}:696 (strict >: ties keep the earlier step)"),
        "select_after": _S(0.7, f"{_MRG}:207 (start_step_ratio default; these scripts do not set it)"),
        "train_classifier": _S(False, f"{mask_a}:{t['mask_a_tc_line']}"),
        "mask_classifier": _S(True, f"{mask_a}:{t['mask_a_tc_line'] + 1}"),
    }
    prune_ft_imp = {
        "prune": {
            "prune_epochs": _S(t["imp_epochs"], f"{lt_p}:3"),
            "imp_round_epochs": _S(t["imp_epochs"] / 10, f"{_IMP}:560"),
            "lr": _S(lr, f"{lt_p}:{t['lt_prune_lr_line']}"),
            "warmup_steps": _S(0, f"{_TA}:78 (default)"),
            "search_loss": _S("poe", f"{lt_p}:{t['lt_prune_loss_line']} (robust_type=poe for every retrain loss)"),
            "imp_per_round": _S(0.1, f"{_IMP}:439"),
            "imp_amount_of": _S("original", f"{_IMP}:439"),
            "imp_levels": _S(tuple(round(0.1 * r, 1) for r in range(1, 10)), imp_rounds),
            "first_step": _S("prune", f"{_IMP}:625 (the pre-trained weights are pruned first; paper Sec. 2.2.1 "
                                      "skips step 1)"),
            "rewind": _S("none", f"{lt_p}:{t['lt_prune_rewind_line']} sets --weight_rewind true, but {_IMP}:595 "
                                 "keeps aliases of the live parameters, so the rewind at :452 is a no-op"),
            "mask_classifier": _S(False, f"{_IMP}:485-496"),
            "eval_every": _S(every, f"{lt_p}:{t['lt_prune_every_line']}"),
            "imp_schedule": _S("budget", f"{_IMP}:433"),
            "clip_mode": _S("global", f"{_IMP}:681"),
            "prune_ft_ticket": _S("finetune", f"{lt_r}:10 (a second run fine-tunes each level's ticket)"),
        },
        "finetune": {
            "rewind": _S("start", f"{lt_r}:10 (model_dir=bert-base-uncased: the pre-trained weights)"),
            "rewind_classifier": _S(True, f"{lt_r}:10 (a new head drawn after set_seed, as in the search run)"),
            "ft_epochs": _S(t["lt_ft_epochs"], f"{lt_r}:3"),
            "lr": _S(lr, f"{lt_r}:26"),
            "warmup_steps": _S(warm, f"{lt_r}:6"),
            "eval_every": _S(every, f"{lt_r}:5"),
            "select": _S("best", f"{lt_r}:7 (best_metric); hg_transformers/trainer.py:601"),
            "mask_classifier": _S(False, f"{lt_r}:{t['lt_r_mc_line']}"),
            "train_classifier": _S(True, f"{lt_r}:{t['lt_r_mc_line']} (head unmasked and trained)"),
            "ft_eval_every": _S(every, f"{lt_r}:5"),
            "clip_mode": _S("per_parameter" if t["per_param_clip"] else "global", clip_src),
        },
    }
    prune_ft_mask = {
        "prune": {
            "mask_from": _S("ft_prune mask training with PoE on the CE fine-tuned model",
                            f"README.md:154; {mask_r}:9 (mask_dir = mask_on_plm_std_ft/poe)"),
        },
        "finetune": {
            "rewind": _S("start", f"{mask_r}:11 (model_dir=bert-base-uncased)"),
            "ft_epochs": _S(t["mask_r_epochs"], f"{mask_r}:3 (retrain/std; retrain/poe: {t['mask_r_poe_epochs']} epochs)"),
            "ft_epochs_by_loss": _S({"ce": t["mask_r_epochs"], "poe": t["mask_r_poe_epochs"]},
                                    f"{mask_r}:3; {mask_r.replace('/std/', '/poe/')}:3"),
            "lr": _S(lr, f"{mask_r}:27"),
            "warmup_steps": _S(warm, f"{mask_r}:6"),
            "eval_every": _S(every, f"{mask_r}:5"),
            "select": _S("best", f"{mask_r}:8; hg_transformers/trainer.py:601"),
            "mask_classifier": _S(False, f"{mask_r}:37"),
            "train_classifier": _S(True, f"{mask_r}:37 (the head is new, unmasked and trained)"),
            "ft_eval_every": _S(every, f"{mask_r}:5"),
            "clip_mode": _S("per_parameter" if t["per_param_clip"] else "global", clip_src),
        },
    }
    prune_ft_mask["prune"]["prune_ft_masks"] = _S("ft_prune_poe", f"README.md:154; {mask_r}:9")
    ood = t["oracle"]
    oracle = {
        "oracle_data": _S("id+ood", f"{ood['script']}:9 (--dataset_names {ood['names']}; load_dataset.py:576-597 "
                                    "concatenates them, each set keeping its label indices, :577)"),
        "oracle_task": _S(ood["task"], f"{ood['script']}:9{ood['task_note']}"),
        "oracle_split": _S(ood["split"], f"{ood['script']}:{ood['split_src']}"),
        "oracle_repeat": _S(ood["repeat"], f"{ood['script']}:{ood['repeat_src']}"),
        "oracle_extra": _S(ood.get("extra", ()), f"{ood['script']}:9 (--dataset_names {ood['names']})"),
        "prune_start": _S("ce", f"{ood['script']}:{ood['model_line']} (model_dir = the CE fine-tuned model)"),
        "prune_epochs": _S(ood["epochs"], f"{ood['script']}:3"),
        "lr_scores": _S(2e-5, f"{ood['script']}:{ood['lr_line']}"),
        "warmup_steps": _S(ood["warmup"], f"{ood['script']}:7"),
        "reset_every": _S(every, f"{ood['script']}:6"),
        "eval_every": _S(every, f"{ood['script']}:6"),
        "select_after": _S(0.7, f"{ood['script']}:5"),
        "clip_mode": _S("per_parameter" if ood["per_param_clip"] else "global",
                        f"{ood['script']}:41 (--global_grad_clip false)" if ood["per_param_clip"] else clip_src),
    }
    mask_pretrained = {
        "prune_epochs": _S(t["mask_epochs"], f"{mask_c}:3"),
        "lr_scores": _S(lr, f"{mask_c}:31"),
        "warmup_steps": _S(warm, f"{mask_c}:7"),
        "threshold": _S(0.01, f"{_MRG}:236"),
        "score_init": _S("magnitude", f"{mask_c}:41"),
        "initial_sparsity": _S("target", "masking/sparsity_control.py:98-102"),
        "reset_every": _S(every, f"{mask_c}:6; {_MT}:654-655"),
        "eval_every": _S(every, f"{mask_c}:6"),
        "select": _S("best", f"{_MT}:696"),
        "select_after": _S(0.0, f"{mask_c}:5 (start_step_ratio=0.)"),
        "mask_classifier": _S(True, f"{mask_c}:9; paper Sec. 2.2.1 (the random head is masked, not trained)"),
        "train_classifier": _S(False, f"{mask_c}:10"),
    }
    gsi_section = {
        "prune_start": _S("ce", f"{gsi}:8"),
        "search_loss": _S("poe", f"{gsi}:6"),
        "sparsities": _S((0.9,), f"{gsi}:4 (zero_rate=0.9)"),
        "initial_sparsity": _S(0.7, f"{gsi}:5; paper Sec. 3.6.2 (70% -> 90%)"),
        "final_sparsity_epoch": _S(t["mask_epochs"], f"{gsi}:35 (= num_epoch, {gsi}:3: the ramp spans the run)"),
        "prune_epochs": _S(t["mask_epochs"], f"{gsi}:3"),
        "score_init": _S("magnitude_soft", f"{gsi}:38; masking/maskers.py:182-187 (score |W|, threshold k-th |W|)"),
        "lr_scores": _S(lr, f"{gsi}:26"),
        "warmup_steps": _S(warm, f"{gsi}:32"),
        "reset_every": _S(every, f"{gsi}:31; {_MT}:654-655 (cubic target, masking/sparsity_control.py:30-34)"),
        "eval_every": _S(every, f"{gsi}:31"),
        "select": _S("best", f"{_MT}:696"),
        "select_after": _S(0.7, f"{_MRG}:207 (default)"),
        "select_metric": _S(t["gsi_metric"][0], t["gsi_metric"][1]),
        "seeds": _S((1, 2, 3, 4), f"{gsi}:11"),
        "train_classifier": _S(False, f"{gsi}:{t['gsi_tc_line']}"),
        "mask_classifier": _S(True, f"{gsi}:{t['gsi_tc_line'] + 1}"),
    }
    return {"common": common, "finetune": finetune,
            "ft_prune": {"imp": {"prune": ft_prune_imp}, "mask": {"prune": ft_prune_mask}},
            "prune_ft": {"imp": prune_ft_imp, "mask": prune_ft_mask},
            "mask_pretrained": {"mask": {"prune": mask_pretrained}},
            "oracle": {"mask": {"prune": oracle}},
            "gsi": gsi_section}


def _dirs(t: str) -> dict:
    m = "scripts/mask_train"
    return {"ft": f"scripts/full_bert/std_train/{t}.sh", "imp_a": f"scripts/imp/prune_after_ft/std/{t}.sh",
            "lt_prune": f"scripts/imp/lt/pruning/{t}.sh", "lt_retrain": f"scripts/imp/lt/retrain/std/{t}/0.7.sh",
            "mask_a": f"{m}/mask_on_plm_ft/plm_std_ft/std/{t}/0.7.sh",
            "mask_retrain": f"{m}/mask_on_plm_ft/plm_std_ft/poe/{t}/retrain/std/0.7.sh",
            "mask_c": f"{m}/mask_on_plm_pt/std/{t}/0.7.sh",
            "gsi": f"{m}/mask_on_plm_ft/plm_std_ft/poe/{t}/gradual_sparsity_increase/0.9.sh"}


_OOD = "scripts/mask_train/mask_on_plm_ft/plm_std_ft/ood"  # the oracle ("train_w_ood") scripts of (a)
_RG_OOD = "run_glue.py:438-445 and mask_run_glue.py:472-479 (the OOD sets evaluated alongside dev)"
_TASKS = {
    "mnli": dict(
        task="mnli", dirs=_dirs("mnli"), lr=5e-5, warmup=3600, every=1000,
        oracle=dict(script=f"{_OOD}/mnli/0.7.sh", names="mnli,hans", task="hans", task_note="", split="train",
                    split_src="9 (HANS train)", repeat=1, repeat_src="9 (no --duplicates)", epochs=3, lr_line=29,
                    warmup=3600, per_param_clip=False, model_line=12),
        bias_file="bias_model_preds/MNLI/log_probs.npy", bias_line=9,
        label_order="contradiction,entailment,neutral", label_order_src="hg_transformers/data/processors/glue.py:233",
        ood=(("hans", "validation"),), ood_src=_RG_OOD + "; load_dataset.py:202 (heuristics_evaluation_set.txt)",
        metric=("accuracy", "run_glue.py:198 and mask_run_glue.py:184 (best_metric default eval_acc; MNLI matched dev)"),
        per_param_clip=False, clip_src="mask_run_glue.py:191 and run_glue.py:220 (global_grad_clip default true)",
        ft_by_loss={"ce": 3, "poe": 5, "conf_reg": 5, "reweight": 3},
        ft_by_loss_src="scripts/full_bert/std_train/mnli.sh:3; scripts/full_bert/robust_train/{poe,conf_reg,reweighting}/mnli.sh:3",
        ft_every_line=28, imp_epochs=5, mask_epochs=5, mask_a_model_line=11, mask_a_lr_line=27,
        mask_a_init_line=36, mask_a_tc_line=37, lt_prune_lr_line=24, lt_prune_loss_line=4, lt_prune_rewind_line=33,
        lt_prune_every_line=29, lt_ft_epochs=5, lt_r_mc_line=36, mask_r_epochs=3, mask_r_poe_epochs=5, gsi_tc_line=39,
        gsi_metric=("accuracy", "mask_run_glue.py:184 (default eval_acc; the GSI script sets none)")),
    "qqp": dict(
        task="qqp", dirs=_dirs("qqp"), lr=2e-5, warmup=3400, every=1000,
        oracle=dict(script=f"{_OOD}/qqp/0.7.sh", names="qqp,paws_qqp,paws_wiki", task="paws-qqp",
                    task_note=" (PAWS-QQP train; PAWS-Wiki train is oracle_extra)", extra=("paws-wiki:train",),
                    split="train", split_src="9 (train sets)", repeat=1, repeat_src="9 (no --duplicates)", epochs=5,
                    lr_line=29, warmup=0, per_param_clip=True, model_line=12),
        bias_file="bias_model_preds/QQP/log_probs.pkl", bias_line=10,
        label_order="not_duplicate,duplicate", label_order_src="hg_transformers/data/processors/glue.py:413 "
                                                              "(\"0\", \"1\": not duplicate, duplicate)",
        ood=(("paws-qqp", "dev"), ("paws-wiki", "test")),
        ood_src=_RG_OOD + "; README.md:64-67 (paws_qqp/dev.tsv, read with mode 'dev', run_glue.py:441)",
        metric=("f1", "scripts/full_bert/std_train/qqp.sh:31 (--best_metric eval_f1; every QQP script)"),
        per_param_clip=True, clip_src="scripts/full_bert/std_train/qqp.sh:27 (--global_grad_clip false: "
                                      "hg_transformers/trainer.py:552-555 and mask_trainer.py:619-622 clip each parameter to norm 1; "
                                      "IMP rounds still clip globally, hg_transformers/trainer_imp.py:681)",
        ft_by_loss={"ce": 3, "poe": 3, "conf_reg": 3, "reweight": 3},
        ft_by_loss_src="scripts/full_bert/{std_train,robust_train/poe,robust_train/conf_reg,robust_train/reweighting}/qqp.sh:3",
        ft_every_line=29, imp_epochs=7, mask_epochs=7, mask_a_model_line=12, mask_a_lr_line=28,
        mask_a_init_line=37, mask_a_tc_line=38, lt_prune_lr_line=24, lt_prune_loss_line=4, lt_prune_rewind_line=33,
        lt_prune_every_line=29, lt_ft_epochs=3, lt_r_mc_line=37, mask_r_epochs=3, mask_r_poe_epochs=3, gsi_tc_line=40,
        gsi_metric=("f1", "scripts/mask_train/mask_on_plm_ft/plm_std_ft/poe/qqp/gradual_sparsity_increase/0.9.sh:39")),
    "fever": dict(
        task="fever", dirs=_dirs("fever"), lr=2e-5, warmup=0, every=500,
        oracle=dict(script=f"{_OOD}/fever/0.7.sh", names="fever,sym2", task="fever-symmetric-v2",
                    task_note=" (sym2: FEVER-Symmetric v2)", split="validation", split_src="10 (set_types train,dev: "
                    "sym2 dev)", repeat=10, repeat_src="11 (duplicates 1,10)", epochs=3, lr_line=33, warmup=0,
                    per_param_clip=False, model_line=14),
        bias_file="bias_model_preds/fever/log_probs.npy", bias_line=9,
        label_order="SUPPORTS,REFUTES,NOT ENOUGH INFO", label_order_src="hg_transformers/data/processors/glue.py:584",
        ood=(("fever-symmetric-v1", "validation"), ("fever-symmetric-v2", "test")),
        ood_src=_RG_OOD + " (sym1 test = Symmetric v0.1 generated set, sym2 test)",
        metric=("accuracy", "run_glue.py:198 and mask_run_glue.py:184 (best_metric default eval_acc)"),
        per_param_clip=False, clip_src="mask_run_glue.py:191 and run_glue.py:220 (global_grad_clip default true)",
        ft_by_loss={"ce": 3, "poe": 3, "conf_reg": 3, "reweight": 3},
        ft_by_loss_src="scripts/full_bert/{std_train,robust_train/poe,robust_train/conf_reg,robust_train/reweighting}/fever.sh:3",
        ft_every_line=28, imp_epochs=7, mask_epochs=7, mask_a_model_line=12, mask_a_lr_line=28,
        mask_a_init_line=37, mask_a_tc_line=38, lt_prune_lr_line=25, lt_prune_loss_line=5, lt_prune_rewind_line=34,
        lt_prune_every_line=4, lt_ft_epochs=3, lt_r_mc_line=36, mask_r_epochs=3, mask_r_poe_epochs=3, gsi_tc_line=39,
        gsi_metric=("accuracy", "mask_run_glue.py:184 (default eval_acc; the GSI script sets none)")),
}

SRNET_PRESETS: dict[str, dict] = {name: _task_numbers(numbers) for name, numbers in _TASKS.items()}


# ---- helpers -------------------------------------------------------------------------------------------
def iter_settings(preset: dict, prefix: tuple = ()):
    """(path, Setting) for every leaf, path = the keys leading to it, e.g. ("ft_prune", "mask", "prune", "lr_scores")."""
    for key, value in preset.items():
        if isinstance(value, Setting):
            yield prefix + (key,), value
        else:
            yield from iter_settings(value, prefix + (key,))


def get_preset(name: str) -> dict:
    """The preset for `name` (mnli, qqp, fever); a UsageError names the known ones."""
    key = str(name).strip().lower()
    if key not in SRNET_PRESETS:
        raise UsageError(f"--preset: unknown preset {name!r}; known: {', '.join(sorted(SRNET_PRESETS))}")
    return SRNET_PRESETS[key]


def phase_values(name: str, pipeline: str, method: str) -> dict[str, dict[str, object]]:
    """Plain values per phase of one pipeline and method, the common section merged under each phase.

    e.g. phase_values("mnli", "prune_ft", "imp") -> {"prune": {...}, "finetune": {...}}; "gsi" as the
    pipeline (method "mask") gives the GSI settings.
    """
    preset = get_preset(name)
    common = {k: s.value for k, s in preset["common"].items()}
    if pipeline == "gsi":
        phases = {"prune": preset["gsi"]}
    else:
        try:
            phases = preset[pipeline][method]
        except KeyError:
            choices = [f"{p}/{m}" for p in ("ft_prune", "prune_ft", "mask_pretrained") for m in preset[p]]
            raise UsageError(f"preset {name!r} has no {pipeline}/{method}; it has {', '.join(choices)} and gsi/mask"
                             ) from None
    return {phase: {**common, **{k: s.value for k, s in settings.items()}} for phase, settings in phases.items()}


def epochs_to_steps(epochs: float, num_examples: int, batch_size: int) -> int:
    """Optimizer steps the reference runs for `epochs`: int(ceil(n / batch) * epochs).

    hg_transformers/trainer_imp.py:556 and mask_trainer.py:447 (the DataLoader keeps the last
    partial batch, so an epoch is ceil(n / batch) steps; fractional epochs truncate).
    """
    for label, value in (("num_examples", num_examples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
        raise ValueError(f"epochs must be a positive number, got {epochs!r}")
    return int(math.ceil(num_examples / batch_size) * epochs)


def imp_round_steps(total_epochs: float, num_examples: int, batch_size: int) -> int:
    """Steps of one reference IMP round: int(t_total / 10) (hg_transformers/trainer_imp.py:560)."""
    return int(epochs_to_steps(total_epochs, num_examples, batch_size) / 10)


def _show(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, tuple):
        return ",".join(str(v) if not isinstance(v, tuple) else ":".join(map(str, v)) for v in value)
    return str(value)


def describe_presets(names=None) -> list[dict[str, str]]:
    """Rows for a --list-presets table: preset, section (pipeline/method/phase), setting, value, source."""
    rows = []
    for name in (sorted(SRNET_PRESETS) if names is None else [str(n).lower() for n in names]):
        for path, setting in iter_settings(get_preset(name)):
            rows.append({"preset": name, "section": "/".join(path[:-1]), "setting": path[-1],
                         "value": _show(setting.value), "source": setting.source})
    return rows


# ---- presets as srnet settings -------------------------------------------------------------------------
def _values(settings: dict) -> dict:
    return {k: s.value for k, s in settings.items()}


def preset_config(name: str) -> dict:
    """SRNetConfig fields for `maskedbert srnet --preset NAME`.

    The study-wide values are the dense fine-tuning's and those of mask training after fine-tuning (the
    paper's main setting); `overrides` holds what differs per pipeline/method (IMP rounds, pipeline (c),
    the subnetwork fine-tuning of (b)). Where the reference does something srnet does not model (IMP's
    budget-wide LR schedule, (b)'s PoE search), docs/PROTOCOLS.md says so.
    """
    preset = get_preset(name)
    common, finetune = _values(preset["common"]), _values(preset["finetune"])
    mask_a = _values(preset["ft_prune"]["mask"]["prune"])
    imp_a = _values(preset["ft_prune"]["imp"]["prune"])
    imp_b = _values(preset["prune_ft"]["imp"]["prune"])
    imp_b_ft = _values(preset["prune_ft"]["imp"]["finetune"])
    mask_b = _values(preset["prune_ft"]["mask"]["prune"])
    mask_b_ft = _values(preset["prune_ft"]["mask"]["finetune"])
    mask_c = _values(preset["mask_pretrained"]["mask"]["prune"])
    oracle = _values(preset["oracle"]["mask"]["prune"])

    def initial(section):  # "target" is fixed sparsity: srnet's None
        return None if section["initial_sparsity"] == "target" else section["initial_sparsity"]

    def mask_training(section):
        return dict(prune_epochs=section["prune_epochs"], lr_scores=section["lr_scores"],
                    warmup_steps=section["warmup_steps"], threshold=section["threshold"],
                    score_init=section["score_init"], initial_sparsity=initial(section),
                    reset_every=section["reset_every"], eval_every=section["eval_every"],
                    select=section["select"], select_after=section["select_after"])

    def ticket(section, epochs_by_loss):  # (b)'s ticket fine-tuning (the retraining scripts)
        return dict(ft_epochs=section["ft_epochs"], ft_epochs_by_loss=epochs_by_loss, lr=section["lr"],
                    warmup_steps=section["warmup_steps"], ft_eval_every=section["ft_eval_every"], ft_select="best",
                    mask_classifier="no" if not section["mask_classifier"] else "yes",
                    train_classifier="yes" if section["train_classifier"] else "no", clip_mode=section["clip_mode"])

    def yes_no(flag):
        return "yes" if flag else "no"

    values = dict(
        task=common["task"], ood_task=common["ood_task"], ood_split=common["ood_split"], model=common["model"],
        batch_size=common["batch_size"], max_length=common["max_length"], sparsities=list(common["sparsities"]),
        adam_eps=common["adam_eps"], weight_decay=common["weight_decay"], max_grad_norm=common["max_grad_norm"],
        clip_mode="per_parameter" if common["clip_per_parameter"] else "global", scope=common["scope"],
        select_metric=common["select_metric"], bias_model=common["bias_model"], extra_ood=list(common["extra_ood"]),
        bias_label_order=common["bias_label_order"], teacher_label_order=common["teacher_label_order"],
        ft_epochs=finetune["ft_epochs"], ft_epochs_by_loss=dict(finetune["ft_epochs_by_loss"]), lr=finetune["lr"],
        ft_select=finetune["ft_select"], ft_eval_every=finetune["ft_eval_every"],
        prune_start=mask_a["prune_start"], **mask_training(mask_a))
    # one warmup_steps serves fine-tuning and mask training: the scripts use the same value for both
    assert finetune["warmup_steps"] == mask_a["warmup_steps"], name
    imp_round = dict(warmup_steps=0, imp_per_round=imp_a["imp_per_round"], imp_amount_of=imp_a["imp_amount_of"])
    values["overrides"] = {
        "ft_prune/imp": dict(imp_round, prune_epochs=imp_a["imp_round_epochs"], lr=imp_a["lr"],
                             mask_classifier=yes_no(imp_a["mask_classifier"]), imp_schedule=imp_a["imp_schedule"],
                             clip_mode=imp_a["clip_mode"], rewind=imp_a["rewind"]),
        "prune_ft/imp": dict(imp_round, prune_epochs=imp_b["imp_round_epochs"], lr=imp_b["lr"],
                             mask_classifier=yes_no(imp_b["mask_classifier"]), imp_schedule=imp_b["imp_schedule"],
                             clip_mode=imp_b["clip_mode"], rewind=imp_b["rewind"],
                             imp_search_loss=imp_b["search_loss"], prune_ft_ticket=imp_b["prune_ft_ticket"]),
        "prune_ft/imp/ticket": ticket(imp_b_ft, {}),
        "prune_ft/mask": dict(prune_ft_masks=mask_b["prune_ft_masks"]),
        "prune_ft/mask/ticket": ticket(mask_b_ft, dict(mask_b_ft["ft_epochs_by_loss"])),
        "mask_pretrained/mask": mask_training(mask_c),
        "oracle/mask": dict(mask_training(dict(mask_a, **oracle)), oracle_data=oracle["oracle_data"],
                            oracle_task=oracle["oracle_task"], oracle_split=oracle["oracle_split"],
                            oracle_repeat=oracle["oracle_repeat"], oracle_extra=list(oracle["oracle_extra"]),
                            prune_start=oracle["prune_start"],
                            clip_mode=oracle["clip_mode"]),
    }
    return values


_TABLE_ROWS = (
    ("model", lambda v: v["model"]), ("OOD set", lambda v: f"{v['ood_task']} ({v['ood_split']})"),
    ("batch / max length", lambda v: f"{v['batch_size']} / {v['max_length']}"),
    ("fine-tune epochs (by loss)", lambda v: f"{v['ft_epochs']} ({_show(v['ft_epochs_by_loss'])})"),
    ("lr / warmup steps", lambda v: f"{v['lr']:g} / {v['warmup_steps']}"),
    ("mask training epochs", lambda v: f"{v['prune_epochs']:g}"),
    ("score lr / threshold", lambda v: f"{v['lr_scores']:g} / {v['threshold']:g}"),
    ("reset / eval every", lambda v: f"{v['reset_every']} / {v['eval_every']} steps"),
    ("select", lambda v: f"{v['select']} after {v['select_after']:.0%}"),
    ("(c) select after", lambda v: f"{v['overrides']['mask_pretrained/mask']['select_after']:.0%}"),
    ("IMP round epochs", lambda v: f"{v['overrides']['ft_prune/imp']['prune_epochs']:g} (10% per round)"),
    ("sparsities", lambda v: ",".join(f"{s:g}" for s in v["sparsities"])),
    ("gradient clipping", lambda v: f"{v['clip_mode']} {v['max_grad_norm']:g}"),
    ("bias model (column order)", lambda v: f"{v['bias_model']} ({v['bias_label_order']})"),
    ("select metric / dense", lambda v: f"{v['select_metric']} / {v['ft_select']} every {v['ft_eval_every']}"),
)


def presets_table() -> str:
    """The presets' key settings side by side (every value's source: describe_presets, or
    docs/reference_srnet_facts.md)."""
    names = sorted(SRNET_PRESETS)
    configs = {n: preset_config(n) for n in names}
    rows = [(label, *(fn(configs[n]) for n in names)) for label, fn in _TABLE_ROWS]
    return "\n".join([text_table(("setting", *names), rows), "",
                      f"Liu et al. (2022) via the reference scripts ({REFERENCE}); every value's source: "
                      "docs/reference_srnet_facts.md. The bias model: pass the reference's "
                      "shipped predictions (bias_model_preds/: .npy rows in training-file order; QQP's pickle "
                      "via `maskedbert convert-probs --trust-pickle IN OUT.jsonl --id-prefix qqp-train-`). "
                      "`maskedbert srnet --preset NAME --dry-run` writes the fully resolved config.json."])
