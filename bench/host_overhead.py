"""Host (CPU) time of one masked linear forward + backward on the GPU code path, Triton launches
stubbed, against F.linear forward + backward, medians measured in the same run.

At BERT-base a training step is ~6-10 ms of GPU time over 73 masked layers (an estimate from the
GEMM sizes), so per-layer Python matters: 100 us per layer would be most of a step. This measures
what the host spends per layer, with tiny tensors so the CPU's own arithmetic stays negligible:

    python bench/host_overhead.py                       # table; target: masked <= 1.5x F.linear
    python bench/host_overhead.py --csv bench/results/host_overhead.csv

Stubbed: every Triton kernel launch (recorded, not run; Triton's own launcher cost, a few us per
launch on the GPU machine, is not included) and the checks that tensors are on CUDA. Everything
else runs as on the GPU: argument handling, the registered ops' dispatch, autograd, and the torch
ops that are cuBLAS/elementwise kernels on a GPU (run here on tiny CPU tensors). Counted per layer
and step: Triton launches and torch compute ops (each a kernel launch on a GPU; views, empty
allocations and metadata ops excluded). The "autograd.Function shell" row is a floor: the default
step's torch ops and launches in a bare Python autograd.Function. Must run without TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# aten ops that launch no kernel on a GPU (views, allocations without a fill, metadata)
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "view", "_unsafe_view", "reshape", "t", "detach",
              "alias", "expand", "as_strided", "permute", "transpose", "slice", "select", "unsqueeze", "squeeze",
              "_to_copy_noop", "lift_fresh", "lift_fresh_copy", "is_same_size", "_has_compatible_shallow_copy_type"}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that would launch a GPU kernel."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in _NO_KERNEL:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _cases(M: int, N: int, K: int):
    """(name, step function) pairs; each step runs one forward + backward of one layer."""
    import maskedbert as mb
    from maskedbert.kernels import masked_linear

    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=g, requires_grad=True)
    dy = torch.randn(M, N, generator=g)

    def dense(weight_trains: bool, bias_trains: bool):
        w = torch.randn(N, K, generator=g, requires_grad=weight_trains)
        b = torch.randn(N, generator=g, requires_grad=bias_trains)
        return lambda: F.linear(x, w, b).backward(dy)

    def masked_module(backend: str):
        layer = mb.MaskedLinear.from_linear(torch.nn.Linear(K, N), sparsity=0.5, backend=backend)
        return lambda: layer(x).backward(dy)

    w = torch.randn(N, K, generator=g)
    b = torch.randn(N, generator=g, requires_grad=True)
    s = torch.randn(N, K, generator=g, requires_grad=True)
    tau = torch.tensor(0.0)
    shell_w, shell_s = torch.randn(N, K, generator=g), torch.randn(N, K, generator=g, requires_grad=True)
    return [
        ("F.linear (W, b train)", dense(True, True)),
        ("F.linear (b trains, W frozen)", dense(False, True)),
        ("autograd.Function shell", lambda: _ShellFunction.apply(x, shell_w, shell_s).backward(dy)),
        ("MaskedLinear triton_dense", masked_module("triton_dense")),
        ("MaskedLinear triton_fused", masked_module("triton_fused")),
        ("masked_linear() triton_dense", lambda: masked_linear(x, w, b, scores=s, threshold=tau,
                                                                backend="triton_dense").backward(dy)),
        ("MaskedLinear torch twin", masked_module("torch")),
    ]


class _ShellFunction(torch.autograd.Function):
    """The least any Python autograd.Function costs for MaskedLinear's default step (scores train,
    W frozen, no bias): the same torch ops (W*M and dS allocated, the forward, dx and G GEMMs) and
    the same two launches (stubbed kernels, with their argument counts), nothing else: no checks, no
    dispatch, no mask. A floor for the eager path, not an implementation."""

    @staticmethod
    def forward(ctx, x, w, s):
        import importlib

        dense = torch.empty_like(w)
        importlib.import_module("maskedbert.kernels.mask_prep_kernel")._mask_prep_kernel[(2, 1)](
            s, w, dense, s, s, 0.0, s, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
            SOURCE=0, THRESHOLD_FROM_PTR=False, WRITE_DENSE=True, WRITE_PACKED=False, WRITE_BOOL=False,
            BLOCK_N=32, BLOCK_B=16)
        ctx.save_for_backward(x, w)
        ctx.dense = dense
        return F.linear(x, dense)

    @staticmethod
    def backward(ctx, dy):
        import importlib

        x, w = ctx.saved_tensors
        dx = torch.mm(dy, ctx.dense)
        grad = torch.mm(dy.t(), x)
        ds = torch.empty_like(grad)
        importlib.import_module("maskedbert.kernels.ste_epilogue_kernel")._ste_epilogue_kernel[(2, 1)](
            grad, w, grad, ds, grad, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            WRITE_DS=True, WRITE_DW=False, BLOCK_N=32, BLOCK_K=128)
        return dx, None, ds


def _median_us(steps: list, iters: int, repeats: int) -> list[float]:
    """Per step function, the median over `repeats` rounds of the median time of `iters` calls. The
    rounds go round-robin over all steps, so a change in the machine's load (it is shared) affects
    every case alike and the ratios stay comparable."""
    for step in steps:
        for _ in range(max(10, iters // 10)):  # warm up: first-call checks, caches
            step()
    medians: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            times = []
            for _ in range(iters):
                start = time.perf_counter_ns()
                step()
                times.append(time.perf_counter_ns() - start)
            medians[i].append(statistics.median(times))
    return [statistics.median(m) / 1000.0 for m in medians]


class _CountingLaunch:
    """Stands in for a Triton kernel: `kernel[grid](...)` only counts (no argument copies, no run)."""

    def __init__(self, launches: list, kernel):
        self.launches, self.configs = launches, getattr(kernel, "configs", [None])

    def __getitem__(self, grid):
        return self._launch

    def _launch(self, *args, **kwargs):
        self.launches.append(1)


@contextlib.contextmanager
def stubbed_launches(launches: list):
    """Every Triton kernel counted instead of launched; the launchers' CUDA-tensor checks off."""
    import importlib

    import compile_variants as cv

    saved = []

    def patch(mod, name, value):
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)

    import maskedbert.kernels  # noqa: F401
    from maskedbert.kernels.masked_linear import clear_plans

    clear_plans()  # plans hold launches prepared (and checked) outside the stubs
    for name in cv.LAUNCHER_MODULES:
        mod = importlib.import_module(f"maskedbert.kernels.{name}")
        if hasattr(mod, "check_triton_tensors"):
            patch(mod, "check_triton_tensors", lambda **tensors: None)
    for qualname, kernel in cv.kernel_objects().items():
        mod_name, name = qualname.split(".")
        patch(importlib.import_module(f"maskedbert.kernels.{mod_name}"), name, _CountingLaunch(launches, kernel))
    try:
        yield
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)
        clear_plans()  # and none made under the stubs (CUDA checks off) outlives them


def run(args) -> list[dict]:
    torch.set_num_threads(1)
    # stubbed kernels leave their outputs uninitialised: denormal garbage in W*M would make the CPU's
    # GEMMs on it many times slower (and the timing depend on what memory held before)
    torch.set_flush_denormal(True)
    launches: list = []
    rows = []
    with stubbed_launches(launches):  # Triton launches counted, not run; CUDA checks off
        cases = _cases(args.tokens, args.out_features, args.in_features)
        for name, step in cases:
            step()  # first call: argument checks, lazy imports
            launches.clear()
            counter = OpCounter()
            with counter:
                step()
            rows.append({"case": name, "median_us": None, "triton_launches": len(launches), "torch_kernel_ops": len(counter.ops),
                         "torch_ops": " ".join(counter.ops)})
        for row, us in zip(rows, _median_us([step for _, step in cases], args.iters, args.repeats)):
            row["median_us"] = round(us, 1)
        launches.clear()
    base = rows[0]["median_us"]
    for r in rows:
        r["vs_F.linear"] = round(r["median_us"] / base, 2)
    return rows


def versions() -> dict:
    import triton

    return {"device": f"cpu ({platform.processor() or platform.machine()}), launches stubbed",
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=8, help="rows of x (tiny: the CPU arithmetic must not count)")
    p.add_argument("--in-features", type=int, default=64)
    p.add_argument("--out-features", type=int, default=64)
    p.add_argument("--iters", type=int, default=500, help="timed steps per case and round")
    p.add_argument("--repeats", type=int, default=9,
                   help="rounds over all cases (round-robin); the median of each case's round medians is reported")
    p.add_argument("--csv", default="", help="append one row per case here")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        p.error("run without TRITON_INTERPRET=1: the GPU code path is what is measured")
    rows = run(args)
    meta = versions()
    print(f"host time per layer, forward + backward ({meta['device']}, torch {meta['torch']}, triton {meta['triton']}); "
          f"x [{args.tokens}, {args.in_features}], W [{args.out_features}, {args.in_features}]")
    print(f"{'case':32s} {'median us':>10s} {'vs F.linear':>11s} {'triton':>7s} {'torch ops':>9s}  ops")
    for r in rows:
        print(f"{r['case']:32s} {r['median_us']:10.1f} {r['vs_F.linear']:10.2f}x {r['triton_launches']:7d} "
              f"{r['torch_kernel_ops']:9d}  {r['torch_ops']}")
    if args.csv:
        new = not os.path.exists(args.csv)
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        with open(args.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, [*rows[0], *meta, "tokens", "in_features", "out_features"])
            if new:
                writer.writeheader()
            for r in rows:
                writer.writerow({**r, **meta, "tokens": args.tokens, "in_features": args.in_features,
                                 "out_features": args.out_features})
    return 0


if __name__ == "__main__":
    sys.exit(main())
