"""End-to-end training-step timing: dense fine-tuning vs mask training vs IMP retraining.

    python bench/train_step.py                       # GPU: BERT-base/large, seq 128/512, batch 32, bf16
    python bench/train_step.py --cpu-smoke           # CPU: a tiny BERT, a few steps (CI smoke test)

Modes (each on a fresh randomly initialised model; no hub):
    dense          fine-tuning with torch.optim.AdamW (the target)
    eager_ref_S    mask training with the reference code's layer: m = (S > t) with a straight-through
                   binarizer; F.linear(x, W*m)  (S = sparsity in %)
    mb_reset_S     maskedbert layers, threshold reset to the k-th score every --reset-every steps
    mb_topk_S      maskedbert layers, exact top-k every step (maskedbert.pruning.exact_sparsity_ with a
                   TopkTracker, as MaskSparsityController runs it)
    imp_S          IMP retraining: fixed mask, weights train
Reports median (and mean) step time, tokens/s, peak memory and the ratio to dense, with device and
library versions, to bench/results/train_step.csv and a plot. GPU numbers exist only once this has
run on a GPU; nothing here estimates them.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

import maskedbert as mb
from maskedbert.kernels import TopkTracker
from maskedbert.pruning import exact_sparsity_, reset_thresholds_

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ helpers, also when imported by tests
from _reference import eager_masked_linear  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

MODEL_SIZES = {  # BERT-base and BERT-large shapes with random weights
    "base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}
TARGETS = ("a BERT-base mask-training step (32 x 128, top-k every step included) <= 1.05x a dense fine-tuning "
           "step run the same way (both eager)")


def _eager_forward(self, x):
    # the buffer, not `self.threshold` (a float read, i.e. a host sync per layer that the reference's
    # Python-float threshold does not pay)
    return eager_masked_linear(x, self.weight, self.bias, self.scores, self.threshold_tensor)


def build_model(size: str, mode: str, sparsity: float, device: torch.device):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_labels=3, **MODEL_SIZES[size])
    model = BertForSequenceClassification(config).to(device)
    if mode == "dense":
        return model
    fixed = mode.startswith("imp")
    mb.apply_masks_(model, mb.MaskConfig(mode="fixed" if fixed else "scores", sparsity=sparsity,
                                         score_init="magnitude"))
    if mode.startswith("eager_ref"):
        for layer in mb.patching.masked_modules(model).values():
            layer.forward = types.MethodType(_eager_forward, layer)
    return model


def mode_list(names: list[str], sparsities: list[int]) -> list[tuple[str, float]]:
    out = []
    for name in names:
        if name == "dense":
            out.append(("dense", 0.0))
        else:
            out += [(f"{name}_{s}", s / 100) for s in sparsities]
    return out


def time_mode(args, size: str, seq: int, mode: str, sparsity: float, device: torch.device) -> dict:
    model = build_model(size, mode, sparsity, device)
    vocab = model.config.vocab_size
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5, fused=device.type == "cuda")
    gen = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, vocab, (args.batch, seq), generator=gen).to(device)
    labels = torch.randint(0, 3, (args.batch,), generator=gen).to(device)
    use_autocast = args.dtype != "float32"
    amp_dtype = getattr(torch, args.dtype) if use_autocast else None
    cuda = device.type == "cuda"
    tracker = TopkTracker()  # brackets each step's k-th values around the previous step's

    def step(i: int):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_autocast):
            loss = F.cross_entropy(model(input_ids=ids).logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if mode.startswith("mb_topk"):
            exact_sparsity_(model, sparsity, tracker=tracker)
        elif mode.startswith(("mb_reset", "eager_ref")) and i % args.reset_every == 0:
            reset_thresholds_(model, sparsity)

    for i in range(args.warmup):
        step(i)
    if getattr(args, "profile", None):  # a trace of a few steps instead of timings
        return profile_steps(step, args, device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(args.warmup + i)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step(args.warmup + i)
            times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    median = statistics.median(times)
    model = opt = None  # free the GPU memory before the next mode (step() holds these as closure cells)
    if cuda:
        torch.cuda.empty_cache()
    # how often the tracker's bracket held (Triton top-k on CUDA only; the CPU twin ignores brackets)
    hits = tracker.hit_rate() if cuda and mode.startswith("mb_topk") else float("nan")
    return {"median_ms": median, "mean_ms": statistics.fmean(times),
            "tokens_per_s": args.batch * seq / (median / 1e3), "peak_mem_mib": peak, "topk_bracket_hits": hits}


def profile_steps(step, args, device: torch.device) -> dict:
    """Run args.profile_steps steps under torch.profiler; write the per-op table (sorted by device
    time) to args.profile and a gzipped Chrome trace beside it (.json.gz)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(args.profile_steps):
            step(args.warmup + i)
        if device.type == "cuda":
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=60)
    os.makedirs(os.path.dirname(os.path.abspath(args.profile)), exist_ok=True)
    with open(args.profile, "w") as f:
        f.write(f"{args.profile_steps} steps, {args.models} seq {args.seqs} batch {args.batch} {args.dtype}\n{table}\n")
    trace = os.path.splitext(args.profile)[0] + ".json"
    prof.export_chrome_trace(trace)
    import gzip
    import shutil

    with open(trace, "rb") as src, gzip.open(trace + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(trace)
    print(table)
    return {}


def versions(device: torch.device) -> dict:
    import transformers
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    return {"device": name, "torch": torch.__version__, "triton": triton.__version__,
            "transformers": transformers.__version__, "maskedbert": mb.__version__}


def write_csv(rows: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["model"], r["seq"]) for r in rows})
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, (size, seq) in zip(axes[0], configs):
        sub = [r for r in rows if (r["model"], r["seq"]) == (size, seq)]
        ax.barh([r["mode"] for r in sub], [r["ratio_to_dense"] for r in sub], color="tab:blue")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.axvline(1.05, color="tab:red", ls="--", lw=0.8, label="1.05x target")
        ax.set_title(f"BERT-{size}, seq {seq}, batch {sub[0]['batch']}")
        ax.set_xlabel("step time / dense step time")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    fig.suptitle(rows[0]["device"])
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="base,large")
    p.add_argument("--seqs", default="128,512")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--modes", default="dense,eager_ref,mb_reset,mb_topk,imp")
    p.add_argument("--sparsities", default="50,90", help="percent, for every non-dense mode")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reset-every", type=int, default=100, help="threshold reset interval (steps)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny BERT on CPU, a few steps (CI smoke test)")
    p.add_argument("--csv", default=os.path.join(RESULTS, "train_step.csv"))
    p.add_argument("--plot", default=os.path.join(RESULTS, "train_step.png"), help="'' for no plot")
    p.add_argument("--profile", default="", metavar="TXT",
                   help="instead of timing: profile --profile-steps steps of the first model, sequence length "
                        "and mode after warm-up; the op table goes to TXT, a gzipped Chrome trace beside it")
    p.add_argument("--profile-steps", type=int, default=3)
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.models, args.seqs, args.batch, args.dtype, args.sparsities = "tiny", "16", 4, "float32", "50"
        args.steps, args.warmup, args.reset_every = 3, 1, 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    if device.type == "cpu" and not args.cpu_smoke:
        print("no CUDA device: run with --cpu-smoke for the CPU smoke test; GPU numbers need a GPU", file=sys.stderr)
        return 2
    meta = versions(device)
    modes = mode_list(args.modes.split(","), [int(s) for s in args.sparsities.split(",")])
    if args.profile:
        size, seq = args.models.split(",")[0], int(args.seqs.split(",")[0])
        time_mode(args, size, seq, *modes[0], device)
        print(f"\n{meta}\nprofile of {args.profile_steps} steps ({modes[0][0]}) written to {args.profile}")
        return 0
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for size in args.models.split(","):
        for seq in [int(s) for s in args.seqs.split(",")]:
            dense_ms = None
            for mode, sparsity in modes:
                result = time_mode(args, size, seq, mode, sparsity, device)
                dense_ms = result["median_ms"] if mode == "dense" else dense_ms
                ratio = result["median_ms"] / dense_ms if dense_ms else float("nan")
                rows.append({"timestamp": stamp, **meta, "model": size, "seq": seq, "batch": args.batch,
                             "dtype": args.dtype, "mode": mode, "sparsity": sparsity, "steps": args.steps,
                             **{k: round(v, 4) for k, v in result.items()}, "ratio_to_dense": round(ratio, 4)})
                r = rows[-1]
                print(f"{size:5s} seq {seq:4d} {mode:14s} {r['median_ms']:9.2f} ms  {r['tokens_per_s']:10.0f} tok/s"
                      f"  peak {r['peak_mem_mib']:8.0f} MiB  x{r['ratio_to_dense']:.3f} dense", flush=True)
                write_csv([r], args.csv)  # each row as it is measured: a run cut short keeps it
    if args.plot:
        plot(rows, args.plot)
    print(f"\n{meta}\ntargets (H100): {TARGETS}\nrows appended to {args.csv}; plot {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
