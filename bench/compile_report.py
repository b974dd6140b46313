"""Compile every Triton kernel of kernels/ for Hopper (sm_90) and Ampere (sm_80) without a GPU, and
report what each compile uses: registers per thread, spill (local memory) bytes, shared memory,
tensor-core instructions (wgmma on sm_90, mma on sm_80).

    python bench/compile_report.py            # CI selection -> bench/results/compile_sm90.csv, compile_sm80.csv
    python bench/compile_report.py --full     # every variant x every config (the whole product; not timed yet)
    python bench/compile_report.py --check --json out.json --csv-dir ''   # what tests/test_compile_gpu.py runs

The variants come from the launchers themselves (bench/compile_variants.py: the public ops run on
small CPU inputs on the GPU code path and their launches are recorded); the CI selection is
`compile_variants.ci_selection`. Must run without TRITON_INTERPRET=1. Compiles run in parallel
processes, each into a fresh Triton cache (so the times are real compiles).

A compile is checked against its target: shared memory within the per-block limit (SHARED_LIMITS),
at most 255 registers per thread, local memory (spills) within SPILL_BUDGET_BYTES. Configs a
kernel's prune_configs_by removes for a target are listed as pruned and not compiled: a GPU never
runs them. --check exits 1 when any compile fails or breaks a limit.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# (compute capability, opt-in shared memory per block in bytes): H100/H200 227 KiB, A100 163 KiB
TARGETS = {"sm90": (90, 227 * 1024), "sm80": (80, 163 * 1024)}
MAX_REGISTERS = 255
# local memory per thread a compile may use (spilled registers, local arrays): a few registers
# spilled around an epilogue cost little next to a tile's main loop. Variants for odd sizes (not
# multiples of 16: unvectorised addressing) report their spills without failing (bench/NOTES.md).
SPILL_BUDGET_BYTES = 64
CSV_FIELDS = ["kernel", "config", "variant", "dtype", "odd_shape", "target", "status", "registers", "spill_bytes",
              "shared_bytes", "shared_limit", "tensor_core", "wgmma_a_operand", "gpu_membars", "compile_s", "triton",
              "error"]
_WGMMA = re.compile(r"wgmma\.mma_async\S*\s+\{[^}]*\},\s*(\{|%)")
_RESOURCES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
# a GPU-scope memory barrier in SASS (MEMBAR.GPU, MEMBAR.SC.GPU, MEMBAR.ALL.GPU, ...): what an
# acq_rel atomic compiles to around itself; relaxed atomics need none
_GPU_MEMBAR = re.compile(r"\bMEMBAR(?:\.[A-Z0-9_]+)*\.GPU\b")

_JOBS: list = []  # (Variant, target name), read by the forked compile workers


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                              text=True, check=True).stdout
    m = _RESOURCES.search(text)
    if not m:
        raise RuntimeError(f"no resource usage in cuobjdump output: {text[:300]}")
    reg, stack, _static_shared, local = map(int, m.groups())
    return {"registers": reg, "spill_bytes": max(local, stack)}


def sass(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout


_PTX_ATOMIC = re.compile(r"^\s*(?:@!?%\w+\s+)?(?:atom|red)\.", re.M)


def has_atomics(ptx: str) -> bool:
    """Whether the PTX holds an atomic (atom.*) or reduction (red.*) instruction."""
    return bool(_PTX_ATOMIC.search(ptx))


def gpu_membars(sass_text: str) -> int:
    """How many GPU-scope memory barriers a kernel's SASS holds."""
    return len(_GPU_MEMBAR.findall(sass_text))


def tensor_core_use(ptx: str) -> tuple[str, str]:
    """('wgmma' | 'mma' | '', where wgmma's A operand comes from: 'registers' | 'shared' | 'mixed' | '')."""
    sources = {"registers" if m.group(1) == "{" else "shared" for m in _WGMMA.finditer(ptx)}
    if sources:
        return "wgmma", sources.pop() if len(sources) == 1 else "mixed"
    if re.search(r"\bmma\.sync\.", ptx):
        return "mma", ""
    return "", ""


def _compile_one(index: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    variant, target_name = _JOBS[index]
    capability, limit = TARGETS[target_name]
    fn, signature, constexprs, attrs, options = variant.spec
    row = {"kernel": variant.kernel, "config": variant.config, "variant": variant.variant, "dtype": variant.dtype,
           "odd_shape": variant.odd_shape, "target": target_name, "shared_limit": limit, "triton": triton.__version__}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                                      target=GPUTarget("cuda", capability, 32), options=options)
        row.update(_resources(compiled.asm["cubin"]))
        if has_atomics(compiled.asm["ptx"]):
            row["gpu_membars"] = gpu_membars(sass(compiled.asm["cubin"]))
        row["shared_bytes"] = compiled.metadata.shared
        row["tensor_core"], row["wgmma_a_operand"] = tensor_core_use(compiled.asm["ptx"])
        if variant.kernel.endswith("_masked_matmul_kernel") and target_name == "sm90":
            row["ttgir_dots"] = [line.strip() for line in compiled.asm["ttgir"].splitlines()
                                 if "warp_group_dot " in line]
        row["status"] = limit_status(row)
    except Exception as e:  # a compile error is a result: report it, keep compiling the rest
        row["status"] = "compile_error"
        row["error"] = f"{type(e).__name__}: {e}"[-2000:]
    row["compile_s"] = round(time.perf_counter() - start, 2)
    return row


def limit_status(row: dict) -> str:
    if row["shared_bytes"] > row["shared_limit"]:
        return "over_shared_limit"
    if row["registers"] > MAX_REGISTERS:
        return "over_register_limit"
    if row["spill_bytes"] > SPILL_BUDGET_BYTES:
        return "spills_odd_size" if row.get("odd_shape") else "spills"
    return "ok"


PASSING = ("ok", "spills_odd_size", "pruned")


def _init_worker(cache_root: str):
    os.environ["TRITON_CACHE_DIR"] = os.path.join(cache_root, str(os.getpid()))


def compile_all(jobs, workers: int, cache_root: str) -> list[dict]:
    _JOBS[:] = jobs
    ctx = multiprocessing.get_context("fork")  # workers inherit the recorded launches
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(cache_root,)) as pool:
        return list(pool.map(_compile_one, range(len(jobs)), chunksize=1))


def run(full: bool, targets: list[str], workers: int, kernels: str = "") -> tuple[list[dict], dict]:
    import compile_variants as cv
    from triton.backends.compiler import GPUTarget

    # triton 3.9 warns that its fp-fusion default will change; the GPU runs use today's default
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
    t0 = time.perf_counter()
    launches = cv.record_launches()
    jobs, pruned_rows = [], []
    for name in targets:
        capability, limit = TARGETS[name]
        found, pruned = cv.variants(launches, GPUTarget("cuda", capability, 32), limit)
        chosen = [v for v in (found if full else cv.ci_selection(found)) if kernels in v.kernel]
        jobs += [(v, name) for v in chosen]
        pruned_rows += [{"kernel": k, "config": c, "dtype": d, "target": name, "status": "pruned",
                         "shared_limit": limit} for k, c, d in pruned if kernels in k]
    record_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="maskedbert-compile-") as cache_root:
        rows = compile_all(jobs, workers, cache_root)
    import resource
    import triton

    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # the compile workers and their ptxas runs

    summary = {
        "triton": triton.__version__, "full": full, "targets": targets, "workers": workers,
        "launches_recorded": len(launches), "record_s": round(record_s, 1),
        "compiles": len(rows), "wall_s": round(time.perf_counter() - t0, 1),
        "compile_cpu_s": round(used.ru_utime + used.ru_stime, 1),
        "kernels_launched": sorted({launch.kernel for launch in launches}),
        "kernels_defined": sorted(cv.kernel_objects()),
        "autotune_configs": {name: [cv.config_label(c) for c in obj.configs]
                             for name, obj in cv.kernel_objects().items() if hasattr(obj, "configs")},
        "failed": [r for r in rows if r["status"] not in PASSING],
    }
    return rows + pruned_rows, summary


def write_csvs(rows: list[dict], directory: str) -> list[str]:
    from maskedbert._atomic import write_text_atomic
    import io

    paths = []
    for target in sorted({r["target"] for r in rows}):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in sorted((r for r in rows if r["target"] == target),
                        key=lambda r: (r["kernel"], r.get("variant", ""), r["config"])):
            writer.writerow(r)
        path = os.path.join(directory, f"compile_{target}.csv")
        os.makedirs(directory, exist_ok=True)
        write_text_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def summary_table(rows: list[dict]) -> str:
    """Per kernel and target: compiles, worst registers / spills / shared memory, tensor-core use."""
    groups: dict = {}
    for r in rows:
        if r["status"] not in ("ok", "spills", "spills_odd_size", "over_shared_limit", "over_register_limit"):
            continue
        groups.setdefault((r["kernel"], r["target"]), []).append(r)
    lines = [f"{'kernel':40s} {'target':6s} {'n':>4s} {'max reg':>7s} {'max spill':>9s} {'max smem KiB':>12s}  tensor cores"]
    for (kernel, target), rs in sorted(groups.items()):
        tc = sorted({f"{r['tensor_core']}{'/A:' + r['wgmma_a_operand'] if r['wgmma_a_operand'] else ''}"
                     for r in rs if r["tensor_core"]})
        lines.append(f"{kernel:40s} {target:6s} {len(rs):4d} {max(r['registers'] for r in rs):7d} "
                     f"{max(r['spill_bytes'] for r in rs):9d} {max(r['shared_bytes'] for r in rs) / 1024:12.1f}  "
                     f"{', '.join(tc) or '-'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="every variant in every config (not the CI selection)")
    p.add_argument("--targets", default="sm90,sm80", help="comma list of " + ", ".join(TARGETS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel compile processes")
    p.add_argument("--csv-dir", default=RESULTS, help="directory for compile_<target>.csv ('' to skip)")
    p.add_argument("--json", default="", help="also write every row and a summary as JSON here")
    p.add_argument("--check", action="store_true", help="exit 1 on a compile error or a broken limit")
    p.add_argument("--kernels", default="", help="only kernels whose name contains this (e.g. masked_matmul)")
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        p.error(f"--targets: unknown {bad or targets}; choose from {', '.join(TARGETS)}")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        p.error("run without TRITON_INTERPRET=1: the interpreter's kernels cannot be compiled")
    rows, summary = run(args.full, targets, args.workers, args.kernels)
    print(summary_table(rows))
    for r in summary["failed"]:
        print(f"FAILED {r['target']} {r['kernel']} [{r['config']}] {r['variant']}: {r['status']} "
              f"{r.get('error', '')[:400]}")
    print(f"{summary['compiles']} compiles (triton {summary['triton']}, {args.workers} workers) "
          f"in {summary['wall_s']} s wall, {summary['compile_cpu_s']} s CPU; {len(summary['failed'])} failed")
    if args.csv_dir:
        for path in write_csvs(rows, args.csv_dir):
            print(f"wrote {path}")
    if args.json:
        from maskedbert._atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 1 if args.check and summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
