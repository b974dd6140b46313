"""Exact top-k masks for every masked matrix of BERT-base / BERT-large, per layer and global.

Compares maskedbert.kernels.topk_masks (Triton radix select on CUDA, the PyTorch twin on CPU)
with what reference code does: a Python loop of torch.kthvalue per matrix, a loop of torch.topk,
a loop of torch.sort, and for global scope torch.cat + kthvalue / topk. Scores are either N(0, 1)
("randn") or SRN's magnitude init, every score exactly 0 or 2*tau ("srn_ties": the worst case for
a radix select, which must break ties by index). Every method's masks are checked for the exact
kept count first (kthvalue's "scores > k-th value" is not exact under ties: it is timed, not checked).

"maskedbert(triton, bracketed)" is the steady state of mask training with a TopkTracker: the bracket
it guesses after two earlier calls on scores that differ from the timed ones by one and two small
updates (1% of each matrix's score spread, about one Adam step of SRN's mask training). Its
`bracket_hits` column is the fraction of matrices whose k-th value the guess held; the rest fall back.

    python bench/topk.py                 # CUDA: BERT-base and BERT-large, triton.testing.do_bench medians
    python bench/topk.py --tiny          # seconds on a CPU: small shapes, time.perf_counter medians

Prints a table and appends CSV rows (device name, torch and triton versions) to bench/results/topk.csv.
Targets on an H100: all per-layer masks of BERT-base in <= 0.3 ms and >= 20x the kthvalue loop.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import sys
import time

import torch
import triton

from maskedbert.kernels import TopkTracker, num_pruned, topk_masks

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "topk.csv")
CSV_FIELDS = [
    "timestamp", "device", "torch", "triton", "model", "scores", "scope", "method",
    "num_tensors", "numel", "sparsity", "median_ms", "speedup_vs_kthvalue", "bracket_hits",
]
UPDATE_FRACTION = 0.01  # per-step score change in the bracketed steady state, relative to the spread
TAU = 0.01  # SRN's threshold: magnitude init puts scores at 0 or 2*tau


def bert_shapes(hidden: int, intermediate: int, layers: int, num_labels: int = 3) -> list[tuple[int, int]]:
    """Masked matrices of a BERT classifier: Q, K, V, attention output, FFN in/out per layer, pooler, head."""
    per_layer = [(hidden, hidden)] * 4 + [(intermediate, hidden), (hidden, intermediate)]
    return per_layer * layers + [(hidden, hidden), (num_labels, hidden)]


MODELS = {
    "bert-base": lambda: bert_shapes(768, 3072, 12),
    "bert-large": lambda: bert_shapes(1024, 4096, 24),
    "tiny": lambda: bert_shapes(64, 256, 2),
}


def make_scores(shapes, kind: str, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for shape in shapes:
        if kind == "randn":
            s = torch.randn(shape, generator=gen)
        else:
            s = (torch.rand(shape, generator=gen) < 0.5).float() * (2 * TAU)
        out.append(s.to(device))
    return out


# ----------------------------------------------------------------------------- methods


def kthvalue_loop(tensors, sparsity):
    """What the reference mask-training code does per matrix (inexact under ties)."""
    masks = []
    for t in tensors:
        pruned = num_pruned(t.numel(), sparsity)
        if pruned == 0:
            masks.append(torch.ones_like(t, dtype=torch.bool))
            continue
        kth = torch.kthvalue(t.reshape(-1), pruned).values
        masks.append(t > kth)
    return masks


def _kept(t: torch.Tensor, sparsity: float) -> int:
    return t.numel() - num_pruned(t.numel(), sparsity)


def _mask_of(t: torch.Tensor, kept_indices: torch.Tensor) -> torch.Tensor:
    """Bool mask shaped like `t`, True at the given flat indices."""
    m = torch.zeros(t.numel(), dtype=torch.bool, device=t.device)
    m[kept_indices] = True
    return m.view(t.shape)


def topk_loop(tensors, sparsity):
    return [_mask_of(t, torch.topk(t.reshape(-1), _kept(t, sparsity), sorted=False).indices) for t in tensors]


def sort_loop(tensors, sparsity):
    return [_mask_of(t, torch.sort(t.reshape(-1), descending=True, stable=True).indices[:_kept(t, sparsity)])
            for t in tensors]


def kthvalue_global(tensors, sparsity):
    flat = torch.cat([t.reshape(-1) for t in tensors])
    kth = torch.kthvalue(flat, max(1, num_pruned(flat.numel(), sparsity))).values
    return [t > kth for t in tensors]


def topk_global(tensors, sparsity):
    flat = torch.cat([t.reshape(-1) for t in tensors])
    m = _mask_of(flat, torch.topk(flat, _kept(flat, sparsity), sorted=False).indices)
    return list(m.split([t.numel() for t in tensors]))


def ours(backend: str, scope: str):
    return lambda ts, s: topk_masks(ts, s, scope=scope, backend=backend)[0]


def steady_state_bracket(tensors, sparsity, scope: str, seed: int = 1):
    """The bracket a TopkTracker guesses after calls on scores - 2u and scores - u (u: small updates)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    updates = [(torch.randn(t.shape, generator=gen) * UPDATE_FRACTION).to(t.device) * t.float().std()
               for t in tensors]
    tracker = TopkTracker()
    for back in (2, 1):
        tracker([t - back * u for t, u in zip(tensors, updates)], sparsity, scope=scope, backend="triton")
    return tracker.bracket()


def bracketed(scope: str):
    brackets = {}  # per (scores, sparsity): prepared once, outside the timing

    def fn(tensors, sparsity):
        key = (id(tensors), sparsity)
        if key not in brackets:
            brackets[key] = steady_state_bracket(tensors, sparsity, scope)
        return topk_masks(tensors, sparsity, scope=scope, backend="triton", bracket=brackets[key])[0]

    fn.bracket_hits = lambda tensors, sparsity: bracket_hit_fraction(tensors, sparsity, scope, brackets)
    return fn


def bracket_hit_fraction(tensors, sparsity, scope: str, brackets) -> float:
    hits = torch.zeros(1 if scope == "global" else len(tensors), dtype=torch.int32, device=tensors[0].device)
    topk_masks(tensors, sparsity, scope=scope, backend="triton", bracket=brackets[(id(tensors), sparsity)],
               _hits=hits)
    return float(hits.sum()) / hits.numel()


def methods(backends: list[str]):
    """Our backends first: the first one's masks are the ones the others must equal exactly."""
    return {
        "layer": {
            **{f"maskedbert({b})": ours(b, "layer") for b in backends},
            **({"maskedbert(triton, bracketed)": bracketed("layer")} if "triton" in backends else {}),
            "kthvalue loop": kthvalue_loop,
            "topk loop": topk_loop,
            "sort loop": sort_loop,
        },
        "global": {
            **{f"maskedbert({b})": ours(b, "global") for b in backends},
            **({"maskedbert(triton, bracketed)": bracketed("global")} if "triton" in backends else {}),
            "cat+kthvalue": kthvalue_global,
            "cat+topk": topk_global,
        },
    }


# ----------------------------------------------------------------------------- timing


def median_ms(fn, device: torch.device, reps: int) -> float:
    if device.type == "cuda":
        return float(triton.testing.do_bench(fn, warmup=25, rep=max(reps, 50), return_mode="median"))
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def check_exact(masks, tensors, sparsity, scope: str, method: str) -> None:
    if scope == "layer":
        for i, (m, t) in enumerate(zip(masks, tensors)):
            keep = t.numel() - num_pruned(t.numel(), sparsity)
            if int(m.sum()) != keep:
                raise AssertionError(f"{method}: tensor {i} kept {int(m.sum())}, expected {keep}")
    else:
        total = sum(t.numel() for t in tensors)
        kept = sum(int(m.sum()) for m in masks)
        if kept != total - num_pruned(total, sparsity):
            raise AssertionError(f"{method}: kept {kept} of {total}, expected {total - num_pruned(total, sparsity)}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(args) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    # on CUDA the PyTorch twin runs too: it must give the same masks, and its time is a baseline
    if args.backends == "auto":
        backends = ["triton", "torch"] if device.type == "cuda" else ["torch"]
    else:  # e.g. triton on a CPU under TRITON_INTERPRET=1, to check the Triton methods' masks
        backends = args.backends.split(",")
    models = ["tiny"] if args.tiny else args.models.split(",")
    reps = args.reps or (5 if args.tiny else 100)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for model in models:
        shapes = MODELS[model]()
        for kind in args.scores.split(","):
            tensors = make_scores(shapes, kind, device)
            numel = sum(t.numel() for t in tensors)
            for scope, table in methods(backends).items():
                if args.scope and scope != args.scope:
                    continue
                timings, hit_fractions = {}, {}
                first = None
                for name, fn in table.items():
                    if "kthvalue" not in name:  # kthvalue is inexact under ties by design
                        masks = fn(tensors, args.sparsity)
                        check_exact(masks, tensors, args.sparsity, scope, name)
                        if name.startswith("maskedbert"):
                            first = first or masks
                            if not all(torch.equal(a, b) for a, b in zip(first, masks)):
                                raise AssertionError(f"{name} masks differ from {backends[0]}'s")
                    timings[name] = median_ms(lambda: fn(tensors, args.sparsity), device, reps)  # noqa: B023 (called here)
                    if hasattr(fn, "bracket_hits"):
                        hit_fractions[name] = round(fn.bracket_hits(tensors, args.sparsity), 3)
                base = timings.get("kthvalue loop", timings.get("cat+kthvalue"))
                for name, ms in timings.items():
                    rows.append({
                        "timestamp": stamp, "device": device_name(device), "torch": torch.__version__,
                        "triton": triton.__version__, "model": model, "scores": kind, "scope": scope,
                        "method": name, "num_tensors": len(tensors), "numel": numel,
                        "sparsity": args.sparsity, "median_ms": round(ms, 4),
                        "speedup_vs_kthvalue": round(base / ms, 2) if ms > 0 else "",
                        "bracket_hits": hit_fractions.get(name, ""),
                    })
    return rows


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':<11}{'scores':<10}{'scope':<8}{'method':<31}{'tensors':>8}{'numel':>12}{'ms':>11}"
              f"{'vs kth':>8}{'hits':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<11}{r['scores']:<10}{r['scope']:<8}{r['method']:<31}{r['num_tensors']:>8}"
              f"{r['numel']:>12}{r['median_ms']:>11.4f}{r['speedup_vs_kthvalue']:>8}{r['bracket_hits']!s:>6}")
    if rows:
        print(f"device: {rows[0]['device']}; torch {rows[0]['torch']}, triton {rows[0]['triton']}")


def append_csv(rows: list[dict], path: str) -> None:
    # appending a few rows: a crash can at worst lose the new rows, never the earlier ones
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new_file = not os.path.exists(path) or os.path.getsize(path) == 0
    if not new_file:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != CSV_FIELDS:
            raise SystemExit(f"{path} has other columns ({len(header)}) than this version writes "
                             f"({len(CSV_FIELDS)}); pass --csv with a new file")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes, a few seconds on a CPU (CI smoke test)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is present")
    parser.add_argument("--models", default="bert-base,bert-large", help="comma list of " + ", ".join(MODELS))
    parser.add_argument("--scores", default="randn,srn_ties", help="comma list: randn, srn_ties")
    parser.add_argument("--scope", choices=["layer", "global"], default=None, help="only this scope")
    parser.add_argument("--sparsity", type=float, default=0.9, help="pruned fraction (SRN's sparsest level)")
    parser.add_argument("--reps", type=int, default=0, help="timed repetitions (0: 5 tiny, 100 full)")
    parser.add_argument("--backends", default="auto",
                        help="comma list of topk backends (auto: triton,torch on CUDA, torch on a CPU)")
    parser.add_argument("--csv", default=RESULTS, help="CSV file the rows are appended to ('' to skip)")
    args = parser.parse_args(argv)
    for backend in ([] if args.backends == "auto" else args.backends.split(",")):
        if backend not in ("triton", "torch"):
            parser.error(f"--backends: unknown backend {backend!r}; choose from triton, torch")
    for model in args.models.split(","):
        if model not in MODELS:
            parser.error(f"--models: unknown model {model!r}; choose from {', '.join(MODELS)}")
    rows = run(args)
    print_table(rows)
    if args.csv:
        append_csv(rows, args.csv)
        print(f"appended {len(rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
