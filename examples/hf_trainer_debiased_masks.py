"""Your Hugging Face Trainer script, plus three lines: mask training with a debiasing loss (product of experts).

    python examples/hf_trainer_debiased_masks.py --model bert-base-uncased --train-file train.jsonl \
        --bias-probs bias.jsonl --out runs/poe-mask --report-to tensorboard

train.jsonl: one NLI example per line, {"id": ..., "premise": ..., "hypothesis": ..., "label": 0|1|2}.
bias.jsonl: a bias model's probabilities per example id, {"id": ..., "probs": [p0, p1, p2]} (any file
maskedbert.bias.load_probs reads; `maskedbert convert-probs` converts the reference code's pickles).

Everything below is an ordinary transformers script; the lines marked "maskedbert" are what it adds:
1. apply_masks_ swaps the linear layers for masked ones (scores start from |W| at the initial sparsity,
   weights frozen, the new head trains);
2. MaskTrainer instead of Trainer: the optimizer args.optim names over maskedbert's groups (scores at
   --lr-scores), mask statistics in every report_to backend, and the PoE loss from the bias
   probabilities looked up by each example's id;
3. the MaskTrainingCallback ramps the sparsity (cubic) and keeps it exact.
trainer.save_model() then writes a mask adapter (bit-packed masks, the trained head, a model card) that
mb.from_pretrained reloads over the base checkpoint, and merge_and_unload turns into a plain model.
"""
from __future__ import annotations

import argparse
import os

import datasets
import transformers

import maskedbert as mb
from maskedbert.integrations import DebiasLoss, MaskTrainer, MaskTrainingCallback


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="hub name or local folder of the pretrained encoder")
    p.add_argument("--train-file", required=True, help="JSON lines: id, premise, hypothesis, label")
    p.add_argument("--bias-probs", required=True, help="bias probabilities by example id (JSON/JSONL)")
    p.add_argument("--out", required=True, help="the Trainer's output_dir; the adapter lands here")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5, help="the classifier head's learning rate")
    p.add_argument("--lr-scores", type=float, default=1e-2, help="mask scores: they live on the threshold's scale")
    p.add_argument("--initial-sparsity", type=float, default=0.3)
    p.add_argument("--final-sparsity", type=float, default=0.5)
    p.add_argument("--report-to", default="none", help="TrainingArguments.report_to: tensorboard, wandb, ...")
    p.add_argument("--seed", type=int, default=42)
    return p


def main(argv: list[str] | None = None) -> dict:
    opts = build_parser().parse_args(argv)
    tokenizer = transformers.AutoTokenizer.from_pretrained(opts.model)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(opts.model, num_labels=3)
    train = datasets.load_dataset("json", data_files=opts.train_file, split="train")
    train = train.map(lambda batch: tokenizer(batch["premise"], batch["hypothesis"], truncation=True, max_length=128),
                      batched=True)
    args = transformers.TrainingArguments(
        output_dir=opts.out, max_steps=opts.max_steps, per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.lr, warmup_steps=0, logging_steps=max(1, opts.max_steps // 20), save_strategy="no",
        report_to=opts.report_to, seed=opts.seed, disable_tqdm=True)

    mb.apply_masks_(model, mb.MaskConfig(sparsity=opts.initial_sparsity))                             # maskedbert 1
    trainer = MaskTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,   # maskedbert 2
                          lr_scores=opts.lr_scores,
                          debias_loss=DebiasLoss("poe", bias_probs=mb.bias.load_probs(opts.bias_probs)),
                          callbacks=[MaskTrainingCallback(initial_sparsity=opts.initial_sparsity,    # maskedbert 3
                                                          final_sparsity=opts.final_sparsity, method="exact_topk")])
    trainer.train()
    trainer.save_model()  # mask_config.json, masks.safetensors, changed_parameters.safetensors, README.md, tokenizer

    # later, anywhere: the base checkpoint + the adapter give the same model; merged, a plain transformers model
    reloaded = mb.from_pretrained(opts.out)
    print(mb.sparsity_report(reloaded))
    merged_dir = os.path.join(opts.out, "merged")
    mb.merge_and_unload(reloaded).save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    return {"trainer": trainer, "model": model, "merged_dir": merged_dir}


if __name__ == "__main__":
    main()
