"""masked_linear against dense nn.Linear, the eager reference and torch.compile, on BERT shapes.

Providers (each gets its own leaf tensors, so gradients never mix):
    dense         F.linear(x, W, b) with W and b trained: the cost of an ordinary nn.Linear training
                  step, the baseline of the "imp" setting (W and b train there too)
    dense_frozen_bias   F.linear(x, W, b) with W trained, b frozen: dx and one weight-sized
                  gradient, like mask training (dS) with its frozen bias; the baseline of "frozen"
    eager         the reference code's way: mask = (S > t) with a straight-through autograd.Function,
                  then F.linear(x, W * mask, b); IMP: F.linear(x, W * fixed_bool_mask, b)
    compile       torch.compile(eager)              (GPU only)
    compile_max   torch.compile(eager, mode="max-autotune")   (GPU only; compiling takes minutes)
    twin          maskedbert masked_linear(backend="torch") (the PyTorch twin)
    triton_dense / triton_fused / triton   masked_linear with that backend ("triton": the dispatcher)
Settings: "frozen" = mask training (W frozen, fp32 scores S trained, bias frozen);
          "imp" = fixed bit-packed mask, W and b trained. x always needs its gradient (a middle layer).
Modes: fwd (forward with autograd recording), bwd (backward of a retained graph), fwd+bwd.
torch.compile runs with torch._functorch.config.donated_buffer = False so that "bwd" can re-run
backward on a retained graph.

Before timing, every provider's y and gradients are compared once with the eager reference
(relative Frobenius error); a mismatch is printed loudly, the provider is not timed, and the
script exits with status 1 at the end.

    python bench/masked_linear.py --quick            # the H100 target config only (minutes)
    python bench/masked_linear.py                    # full grid (long: compile_max dominates)
    python bench/masked_linear.py --cpu-smoke        # seconds on a CPU (Triton interpreter)

GPU targets (H100/H200, bf16, fwd+bwd, M = 4096 and 8192, each BERT shape), shown per Triton
provider in the "target" column: <= 1.05x the setting's dense baseline (ratio_to_dense), and the
overhead over dense at most 0.3x eager's: (masked - dense) <= 0.3 (eager - dense). Eager runs the
same three GEMMs plus ~34 B/weight of elementwise work, so no implementation beats it by more than
about 1 + 1370/M (1.17x at M = 8192): the overhead ratio is the meaningful target, not a speedup.
On CUDA, fwd+bwd is also timed as a CUDA graph (triton.testing.do_bench_cudagraph: the host's
launch overhead removed) in cudagraph_ms. Each row is printed and appended to the CSV as soon as
it is measured (bench/results/masked_linear.csv by default), with device and library versions.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ helpers, also when imported by tests
from _reference import eager_masked_linear  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "masked_linear.csv")
CSV_FIELDS = [
    "timestamp", "device", "torch", "triton", "maskedbert", "M", "N", "K", "dtype", "mode", "setting",
    "provider", "median_ms", "cudagraph_ms", "dense_baseline", "ratio_to_dense", "tflops", "check_rel_err",
    "status", "target",
]
# the shapes BERT-base runs: Q, K, V, attention output (768x768), FFN up (3072x768), FFN down (768x3072)
BERT_BASE = [(768, 768), (3072, 768), (768, 3072)]
BERT_LARGE = [(1024, 1024), (3072, 1024), (4096, 1024), (1024, 4096)]
TOKENS = [4096, 8192, 16384]
SMOKE_TOKENS, SMOKE_SHAPES = [33], [(24, 40)]  # odd on purpose: partial tiles everywhere
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODES = ["fwd", "bwd", "fwd+bwd"]
SETTINGS = ["frozen", "imp"]
GPU_PROVIDERS = ["dense", "dense_frozen_bias", "eager", "compile", "compile_max", "twin", "triton_dense",
                 "triton_fused", "triton"]
CPU_PROVIDERS = ["dense", "dense_frozen_bias", "eager", "twin", "triton_dense", "triton_fused", "triton"]
DENSE_PROVIDERS = ("dense", "dense_frozen_bias")
TARGET_RATIO = 1.05  # masked / dense
TARGET_OVERHEAD_SHARE = 0.3  # (masked - dense) / (eager - dense)
TRITON_PROVIDERS = ("triton_dense", "triton_fused", "triton")
# relative Frobenius error allowed between a provider and the eager reference in the same dtype
CHECK_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
THRESHOLD = 0.0  # scores ~ N(0, 1): about half the weights kept


def eager_frozen(x, weight, bias, scores):
    return eager_masked_linear(x, weight, bias, scores, THRESHOLD)


def eager_imp(x, weight, bias, mask):
    return F.linear(x, weight * mask, bias)


def make_inputs(M, N, K, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(N, K, generator=gen)
    return {
        "x": torch.randn(M, K, generator=gen).to(device, dtype),
        "weight": (torch.randn(N, K, generator=gen) * K ** -0.5).to(device, dtype),
        "bias": torch.randn(N, generator=gen).to(device, dtype),
        "scores": scores.to(device),
        "mask": (scores > THRESHOLD).to(device),
        "dy": torch.randn(M, N, generator=gen).to(device, dtype),
    }


def build(provider, inputs, setting, masked_linear, pack_mask):
    """-> (forward function, {name: leaf tensor that receives a gradient})."""
    if provider == "dense_frozen_bias":
        trains = {"x", "weight"}
    else:
        trains = {"x"} | ({"weight", "bias"} if provider == "dense" or setting == "imp" else {"scores"})
    t = {k: inputs[k].detach().clone().requires_grad_(k in trains) for k in ("x", "weight", "bias", "scores")}
    leaves = {k: t[k] for k in sorted(trains)}
    x, w, b, s = t["x"], t["weight"], t["bias"], t["scores"]
    if provider in DENSE_PROVIDERS:
        return (lambda: F.linear(x, w, b)), leaves
    if provider in ("eager", "compile", "compile_max"):
        if setting == "frozen":
            fn, args = eager_frozen, (x, w, b, s)
        else:
            fn, args = eager_imp, (x, w, b, inputs["mask"])
        if provider != "eager":
            torch._dynamo.reset()  # a fresh cache per shape: recompiles must not hit the cache-size limit
            # the "bwd" mode re-runs backward on a retained graph, which donated buffers forbid
            # (they only save memory, not time)
            import torch._functorch.config as functorch_config

            if hasattr(functorch_config, "donated_buffer"):
                functorch_config.donated_buffer = False
            mode = "max-autotune" if provider == "compile_max" else "default"
            fn = torch.compile(fn, mode=mode, dynamic=False)
        return (lambda: fn(*args)), leaves
    backend = "torch" if provider == "twin" else provider
    if setting == "frozen":
        return (lambda: masked_linear(x, w, b, scores=s, threshold=THRESHOLD, backend=backend)), leaves
    packed = pack_mask(inputs["mask"])
    return (lambda: masked_linear(x, w, b, mask=packed, backend=backend)), leaves


def run_once(forward, leaves, dy):
    for leaf in leaves.values():
        leaf.grad = None
    y = forward()
    y.backward(dy)
    return {"y": y.detach(), **{k: v.grad.detach().clone() for k, v in leaves.items()}}


def rel_err(a, b):
    scale = b.double().norm().item()
    diff = (a.double() - b.double()).norm().item()
    return diff / scale if scale > 0 else diff


def check(got, want, dtype):
    """-> (largest relative error over y and the gradients, names missing from got, tolerance)."""
    errs = [rel_err(got[k], want[k]) for k in want if k in got]
    missing = sorted(set(want) - set(got))
    return (max(errs) if errs else None), missing, CHECK_TOL[dtype]


def mode_fn(mode, forward, dy):
    if mode == "fwd":
        return forward
    if mode == "fwd+bwd":
        return lambda: forward().backward(dy)
    y = forward()
    return lambda: y.backward(dy, retain_graph=True)


def cudagraph_ms(fn, leaves, device):
    """fwd+bwd replayed as a CUDA graph (no host overhead); None off CUDA or when capture fails."""
    if device.type != "cuda":
        return None
    import triton.testing

    try:
        return triton.testing.do_bench_cudagraph(fn, grad_to_none=list(leaves.values()), return_mode="median")
    except Exception as exc:  # a provider that cannot be captured: report, keep the plain timing
        print(f"!! CUDA graph capture failed: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def median_ms(fn, leaves, device, reps):
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, grad_to_none=list(leaves.values()), return_mode="median")
    fn()  # warm-up: first calls compile/trace
    times = []
    for _ in range(reps):
        for leaf in leaves.values():
            leaf.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def flops(mode, setting, M, N, K):
    """Useful GEMM flops: forward 2MNK; backward dx + (dS or dW) = 4MNK."""
    return 2 * M * N * K * {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]


def is_target_config(M, N, K, dtype, mode, setting):
    return M in (4096, 8192) and (N, K) in BERT_BASE and dtype == torch.bfloat16 and mode == "fwd+bwd"


def dense_baseline(setting):
    """The dense layer that trains what the setting trains: mask training freezes the bias."""
    return "dense_frozen_bias" if setting == "frozen" else "dense"


def target_verdict(row, by_provider, setting):
    """PASS/MISS for a Triton provider on a target config (GPU only): <= 1.05x the dense baseline and
    (masked - dense) <= 0.3 (eager - dense). torch.compile providers are reported, not required."""
    ms = row["median_ms"]
    dense = by_provider.get(dense_baseline(setting), {}).get("median_ms")
    eager = by_provider.get("eager", {}).get("median_ms")
    if ms is None or dense is None or eager is None:
        return "MISS (baseline not measured)"
    misses = []
    if ms > TARGET_RATIO * dense:
        misses.append(f"{ms / dense:.3f}x dense > {TARGET_RATIO}x")
    if ms - dense > TARGET_OVERHEAD_SHARE * (eager - dense):
        share = (ms - dense) / (eager - dense) if eager > dense else float("inf")
        misses.append(f"overhead {share:.2f} of eager's > {TARGET_OVERHEAD_SHARE}")
    return "PASS" if not misses else "MISS: " + "; ".join(misses)


def parse_shapes(text):
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "base":
            out += BERT_BASE
        elif item == "large":
            out += BERT_LARGE
        else:
            try:
                n, k = (int(v) for v in item.split("x"))
            except ValueError:
                raise argparse.ArgumentTypeError(f"--shapes: expected 'base', 'large' or NxK, got {item!r}")  # noqa: B904 (argparse prints only the message)
            out.append((n, k))
    return out


def parse_choice(allowed):
    def parse(text):
        items = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma list of {list(allowed)}, got {text!r}")
        return items
    return parse


def versions():
    import triton

    try:
        from importlib.metadata import version

        mb = version("maskedbert")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        mb = "unknown"
    return torch.__version__, triton.__version__, mb


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, interpreter)"


def run(args, masked_linear, pack_mask, emit=lambda row: None):
    """Measures every config; `emit(row)` gets each finished row at once (printed and appended to the
    CSV by main), so a run cut short keeps what it measured."""
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    torch_v, triton_v, mb_v = versions()
    configs = [(M, N, K, d) for d in args.dtypes for M in args.tokens for (N, K) in args.shapes]
    try:
        from tqdm import tqdm
    except ImportError:  # optional here
        tqdm = lambda it, **_: it
    rows, mismatches = [], []
    for M, N, K, dname in tqdm(configs, desc="masked_linear bench", disable=args.cpu_smoke):
        dtype = DTYPES[dname]
        inputs = make_inputs(M, N, K, dtype, device)
        for setting in args.settings:
            per_mode = {mode: {} for mode in args.modes}
            reference = None
            for provider in args.providers:
                base = dict(timestamp=stamp, device=device_name(device), torch=torch_v, triton=triton_v,
                            maskedbert=mb_v, M=M, N=N, K=K, dtype=dname, setting=setting, provider=provider,
                            median_ms=None, ratio_to_dense=None, tflops=None, check_rel_err=None,
                            status="ok", target="")
                try:
                    forward, leaves = build(provider, inputs, setting, masked_linear, pack_mask)
                    result = run_once(forward, leaves, inputs["dy"])
                except Exception as exc:  # e.g. torch.compile unavailable: report, keep measuring the rest
                    print(f"!! {provider} {M}x{N}x{K} {dname} {setting}: {type(exc).__name__}: {exc}")
                    for mode in args.modes:
                        row = {**base, "mode": mode, "status": f"error: {type(exc).__name__}"}
                        per_mode[mode][provider] = row
                        rows.append(row)
                        emit(row)
                    continue
                if provider == "eager":
                    reference = result
                elif provider not in DENSE_PROVIDERS:
                    if reference is None:
                        raise SystemExit("the eager provider must run before the others (it is the reference)")
                    err, missing, tol = check(result, reference, dtype)
                    base["check_rel_err"] = err
                    if missing or err is None or not err < tol:
                        msg = (f"MISMATCH {provider} {M}x{N}x{K} {dname} {setting}: rel err {err} "
                               f"(tolerance {tol}), missing {missing}")
                        print("!!!!!!!! " + msg, file=sys.stderr)
                        mismatches.append(msg)
                        base["status"] = "MISMATCH"
                for mode in args.modes:
                    row = {**base, "mode": mode, "dense_baseline": dense_baseline(setting)}
                    if row["status"] == "ok":
                        ms = median_ms(mode_fn(mode, forward, inputs["dy"]), leaves, device, args.reps)
                        row["median_ms"] = ms
                        row["tflops"] = flops(mode, setting, M, N, K) / (ms * 1e-3) / 1e12
                        if mode == "fwd+bwd":
                            row["cudagraph_ms"] = cudagraph_ms(mode_fn(mode, forward, inputs["dy"]), leaves, device)
                    by_provider = per_mode[mode]
                    by_provider[provider] = row
                    dense_ms = by_provider.get(dense_baseline(setting), {}).get("median_ms")
                    if dense_ms and row["median_ms"]:
                        row["ratio_to_dense"] = row["median_ms"] / dense_ms
                    if (device.type == "cuda" and provider in TRITON_PROVIDERS
                            and is_target_config(M, N, K, dtype, mode, setting)):
                        row["target"] = target_verdict(row, by_provider, setting)
                    rows.append(row)
                    emit(row)
                del forward, leaves, result
        del inputs
    return rows, mismatches


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


TABLE_HEADER = (f"{'M':>6} {'N':>5} {'K':>5} {'dtype':>5} {'mode':>7} {'setting':>7} {'provider':>17} "
                f"{'ms':>9} {'graph ms':>9} {'x dense':>8} {'TFLOP/s':>8} {'check':>8}  target")


def table_line(r):
    check_text = r["status"] if r["status"] != "ok" else fmt(r["check_rel_err"], ".1e")
    return (f"{r['M']:>6} {r['N']:>5} {r['K']:>5} {r['dtype']:>5} {r['mode']:>7} {r['setting']:>7} "
            f"{r['provider']:>17} {fmt(r['median_ms'], '.4f'):>9} {fmt(r.get('cudagraph_ms'), '.4f'):>9} "
            f"{fmt(r['ratio_to_dense'], '.3f'):>8} {fmt(r['tflops'], '.1f'):>8} {check_text:>8}  {r['target']}")


def print_table(rows):
    print(TABLE_HEADER)
    print("-" * len(TABLE_HEADER))
    for r in rows:
        print(table_line(r))


def atomic_write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def append_csv(rows, path):
    """Append rows (header written once); the whole file is rewritten atomically."""
    old = ""
    if os.path.exists(path):
        with open(path, newline="") as f:
            old = f.read()
        first = old.splitlines()[0] if old else ""
        if first and first.split(",") != CSV_FIELDS:
            raise SystemExit(f"{path} has other columns ({first!r}); move it aside to start a new file")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    if not old:
        writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_FIELDS})
    atomic_write(path, old + buf.getvalue())


def write_dispatch_table(rows, path, table_key):
    """Fastest of triton_dense / triton_fused per shape (fwd+bwd, frozen), for MASKEDBERT_DISPATCH_TABLE."""
    best = {}
    for r in rows:
        if r["mode"] == "fwd+bwd" and r["setting"] == "frozen" and r["provider"] in ("triton_dense", "triton_fused") \
                and r["median_ms"] is not None:
            key = table_key(r["M"], r["N"], r["K"], DTYPES[r["dtype"]])
            if key not in best or r["median_ms"] < best[key][1]:
                best[key] = (r["provider"], r["median_ms"])
    atomic_write(path, json.dumps({k: v[0] for k, v in sorted(best.items())}, indent=1) + "\n")
    return len(best)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", type=parse_shapes, help="comma list of base, large, NxK (default: base,large)")
    p.add_argument("--tokens", type=lambda s: [int(v) for v in s.split(",")], help="M values (default 4096,8192,16384)")
    p.add_argument("--dtypes", type=parse_choice(DTYPES), help="comma list of bf16, fp16, fp32 (default all)")
    p.add_argument("--modes", type=parse_choice(MODES), help="comma list of fwd, bwd, fwd+bwd (default all)")
    p.add_argument("--settings", type=parse_choice(SETTINGS), help="frozen (mask training), imp (default both)")
    p.add_argument("--providers", type=parse_choice(GPU_PROVIDERS), help="subset of providers (default all)")
    p.add_argument("--quick", action="store_true",
                   help="the target configs only: M=4096,8192, BERT-base shapes, bf16, fwd+bwd, frozen")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny shapes on CPU, torch and Triton-interpreter providers only, perf_counter medians")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions on CPU (CUDA uses do_bench)")
    p.add_argument("--csv", default=RESULTS, help="CSV file rows are appended to ('' to skip)")
    p.add_argument("--write-dispatch-table", metavar="JSON", help="write the fastest Triton path per shape here")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens = args.tokens or [4096, 8192]
        args.shapes = args.shapes or BERT_BASE
        args.dtypes = args.dtypes or ["bf16"]
        args.modes = args.modes or ["fwd+bwd"]
        args.settings = args.settings or ["frozen"]
    if args.cpu_smoke:
        args.tokens = args.tokens or SMOKE_TOKENS
        args.shapes = args.shapes or SMOKE_SHAPES
        args.dtypes = args.dtypes or ["fp32"]
        args.reps = min(args.reps, 3)
        compiled = [p for p in (args.providers or []) if p not in CPU_PROVIDERS]
        if compiled:
            p.error(f"--cpu-smoke runs no torch.compile providers, got {compiled}")
        args.providers = args.providers or CPU_PROVIDERS
    args.tokens = args.tokens or TOKENS
    args.shapes = args.shapes or BERT_BASE + BERT_LARGE
    args.dtypes = args.dtypes or list(DTYPES)
    args.modes = args.modes or MODES
    args.settings = args.settings or SETTINGS
    args.providers = args.providers or GPU_PROVIDERS
    if args.reps < 1:
        p.error("--reps must be >= 1")
    # the dense baselines run first (ratios), then the eager reference (everything is checked against it)
    args.providers = sorted(set(args.providers) | {"eager", "dense", "dense_frozen_bias"}, key=GPU_PROVIDERS.index)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.cpu_smoke:
        # must precede the first kernel import: the interpreter mode is fixed when kernels are decorated
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke for the CPU check (no GPU numbers are produced here)")
        return 2
    from maskedbert.kernels import masked_linear, pack_mask
    from maskedbert.kernels.dispatch import table_key

    print(TABLE_HEADER, flush=True)

    def emit(row):
        print(table_line(row), flush=True)
        if args.csv:
            append_csv([row], args.csv)

    rows, mismatches = run(args, masked_linear, pack_mask, emit)
    print("\nsummary")
    print_table(rows)
    if args.csv:
        print(f"appended {len(rows)} rows to {args.csv}")
    if args.write_dispatch_table:
        n = write_dispatch_table(rows, args.write_dispatch_table, table_key)
        print(f"wrote {n} dispatch entries to {args.write_dispatch_table}")
    if mismatches:
        print(f"{len(mismatches)} provider(s) disagree with the eager reference:", file=sys.stderr)
        for m in mismatches:
            print("  " + m, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
