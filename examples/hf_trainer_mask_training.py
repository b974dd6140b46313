"""Mask training inside a plain transformers.Trainer script, with maskedbert's callback.

    python examples/hf_trainer_mask_training.py --out runs/hf-mask                 # tiny BERT, offline, ~1 min
    python examples/hf_trainer_mask_training.py --out runs/hf-mask --stop-after 20 # stop at a checkpoint ...
    python examples/hf_trainer_mask_training.py --out runs/hf-mask --resume        # ... and continue it
    python examples/hf_trainer_mask_training.py --model bert-base-uncased --out runs/bert-mask   # a hub model
    torchrun --nproc_per_node=2 examples/hf_trainer_mask_training.py --out runs/hf-ddp --cpu   # DDP

What maskedbert adds to an ordinary (plain transformers.Trainer) script, marked "maskedbert:" below:
apply_masks_ before the Trainer, the optimizer args.optim names over groups with the scores at their
own learning rate (build_optimizer), the MaskTrainingCallback, and mb.save_pretrained for a small mask
adapter at the end. examples/hf_trainer_debiased_masks.py does the same with MaskTrainer (mask
statistics in every report_to backend, a debiasing loss) and trainer.save_model(). The data is maskedbert's synthetic sentence-pair
task so the script runs without a network; swap in your own tokenized dataset.
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import transformers

import maskedbert as mb
from maskedbert.integrations import MaskTrainingCallback, build_optimizer

TINY = "tiny-bert"  # a random 2-layer BERT built locally (maskedbert.models)


def load_model_and_tokenizer(name: str, out: str, seed: int):
    """A sequence-pair classifier and its tokenizer. The tiny model is saved once as a local 'base
    checkpoint' (every rank builds the same one from the seed) so that the adapter names the checkpoint
    its masks apply to, as it does for a hub model."""
    if name != TINY:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        return transformers.AutoModelForSequenceClassification.from_pretrained(name, num_labels=2), tokenizer
    from maskedbert.data import synthetic_pair_vocabulary
    from maskedbert.models import load_model_and_tokenizer as load_tiny

    torch.manual_seed(seed)
    model, tokenizer = load_tiny(TINY, 2, vocab=synthetic_pair_vocabulary())
    base_dir = os.path.join(out, "base_model")
    if int(os.environ.get("RANK", "0")) == 0 and not os.path.isdir(base_dir):
        model.save_pretrained(base_dir)
    model.config._name_or_path = base_dir  # what from_pretrained(base_dir) would record
    return model, tokenizer


def training_data(tokenizer, size: int, seed: int) -> list[dict]:
    from maskedbert.data import synthetic_pair_examples

    examples = synthetic_pair_examples("train", seed=seed, size=size)
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=64)
    return [{**{k: encoded[k][i] for k in encoded}, "label": e.label} for i, e in enumerate(examples)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=TINY, help=f"hub name or local path (default {TINY}, offline)")
    p.add_argument("--out", required=True, help="Trainer output_dir")
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-5, help="head (and weights if they train)")
    p.add_argument("--lr-scores", type=float, default=1e-2, help="mask scores (they live on the threshold's scale)")
    p.add_argument("--initial-sparsity", type=float, default=0.5)
    p.add_argument("--final-sparsity", type=float, default=0.8)
    p.add_argument("--method", choices=["threshold_reset", "exact_topk"], default="threshold_reset")
    p.add_argument("--reset-every", type=int, default=5)
    p.add_argument("--save-steps", type=int, default=10)
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--stop-after", type=int, help="stop after this step's checkpoint (to try --resume)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU (gloo under torchrun)")
    return p


class StopAfter(transformers.TrainerCallback):
    """Stops training after a given step, as an interruption would (the checkpoint is written first)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True


def main(argv: list[str] | None = None) -> dict:
    opts = build_parser().parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(opts.model, opts.out, opts.seed)
    train = training_data(tokenizer, opts.train_size, opts.seed)

    # maskedbert: scores start from |W| at the schedule's initial sparsity; weights frozen, head trains
    mb.apply_masks_(model, mb.MaskConfig(mode="scores", sparsity=opts.initial_sparsity))
    args = transformers.TrainingArguments(
        output_dir=opts.out, max_steps=opts.max_steps, per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.lr, weight_decay=0.0, warmup_steps=0, lr_scheduler_type="linear",
        save_strategy="steps", save_steps=opts.save_steps, logging_steps=1, report_to="none",
        seed=opts.seed, data_seed=opts.seed, use_cpu=opts.cpu, disable_tqdm=True, dataloader_num_workers=0)
    callback = MaskTrainingCallback(initial_sparsity=opts.initial_sparsity, final_sparsity=opts.final_sparsity,
                                    method=opts.method, reset_every=opts.reset_every)
    callbacks = [callback] + ([StopAfter(opts.stop_after)] if opts.stop_after else [])
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=train, data_collator=transformers.DataCollatorWithPadding(tokenizer),
        callbacks=callbacks, optimizers=(build_optimizer(model, args, lr_scores=opts.lr_scores), None))
    trainer.train(resume_from_checkpoint=True if opts.resume else None)

    result = {"global_step": trainer.state.global_step, "history": callback.history,
              "final_sparsity": callback.final_sparsity_measured, "model": model}
    if trainer.is_world_process_zero() and trainer.state.global_step >= opts.max_steps:
        # maskedbert: a small adapter (bit-packed masks + the trained head) over the base checkpoint
        mb.save_pretrained(model, os.path.join(opts.out, "mask_adapter"))
        tokenizer.save_pretrained(os.path.join(opts.out, "mask_adapter"))
        result["adapter"] = os.path.join(opts.out, "mask_adapter")
        print(mb.sparsity_report(model))
    if trainer.is_world_process_zero():
        print(json.dumps({k: v for k, v in result.items() if k not in ("history", "model")}))
    return result


if __name__ == "__main__":
    main()
