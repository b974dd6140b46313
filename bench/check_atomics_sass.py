"""Every Triton kernel with atomics, compiled for sm_90: its SASS must hold no GPU-scope memory
barrier (MEMBAR.*.GPU). An atomic with the default acq_rel order compiles to MEMBAR.ALL.GPU (plus a
cache invalidate) around itself; `sem="relaxed"` compiles to a bare RED/ATOM. The kernels'
atomics only accumulate, so none needs ordering inside a launch.

    python bench/check_atomics_sass.py            # CI selection of variants, sm_90; exit 1 on a barrier

No GPU needed (compile_report.py's machinery: the launches the public ops make, compiled by
Triton for the target; cuobjdump from the Triton wheel disassembles). Run without TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default="sm90", help="comma list (sm90, sm80)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        p.error("run without TRITON_INTERPRET=1: the interpreter's kernels cannot be compiled")
    import compile_report

    rows, summary = compile_report.run(False, args.targets.split(","), args.workers)
    atomic_rows = [r for r in rows if "gpu_membars" in r]
    bad = [r for r in atomic_rows if r["gpu_membars"]]
    for r in bad:
        print(f"BARRIER {r['target']} {r['kernel']} [{r['config']}] {r['variant']}: {r['gpu_membars']} MEMBAR.*.GPU")
    kernels = sorted({r["kernel"] for r in atomic_rows})
    print(f"{len(atomic_rows)} compiles with atomics ({', '.join(kernels)}); {len(bad)} with GPU-scope barriers; "
          f"{len(summary['failed'])} compiles failed")
    return 1 if bad or summary["failed"] or not atomic_rows else 0


if __name__ == "__main__":
    sys.exit(main())
