"""Every Triton kernel of kernels/ compiles for H100/H200 (sm_90) and A100 (sm_80), and can launch there.

No GPU needed: one subprocess (without TRITON_INTERPRET, so the kernels are decorated for real
compilation) runs `bench/compile_report.py --check`, which records the launches the public ops make
on small CPU inputs on the GPU code path (bench/compile_variants.py: all autotune configs, no fp32
upcast of the dot, split-K atomics on and off, GPU top-k tiles) and compiles them with Triton's own
specialisation of each launch.

Covered (the CI selection, per target): every autotune config of the two GEMM kernels once, on
their heaviest bf16 variant; in the first config, variants chosen so that every pair of factors
(constexpr values, compute dtype, pointer types) of the recorded variants occurs; one odd-size
(not multiple of 16) variant per kernel; every recorded variant of the other kernels likewise.
Checked: no compile error, shared memory within the block limit (227 KiB sm_90, 163 KiB sm_80),
<= 255 registers, spills within compile_report.SPILL_BUDGET_BYTES (odd-size variants report
their spills without failing); configs the kernels'
prune_configs_by drops are not compiled (a GPU never runs them); the masked GEMM keeps the masked
weight as wgmma's register (left) operand on sm_90 (Triton >= 3.6) and uses mma on sm_80; no kernel
with atomics has a GPU-scope memory barrier in its sm_90 SASS (relaxed atomics).
Left out: the variants outside that selection (`python bench/compile_report.py --full` compiles
every variant in every config), N:M patterns other than compile_variants.NM_PATTERNS, and anything
only a run shows (races, atomics, numerics, speed).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "bench" / "compile_report.py"


def _load_report():
    sys.path.insert(0, str(REPORT.parent))
    spec = importlib.util.spec_from_file_location("compile_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    reuse = os.environ.get("MASKEDBERT_COMPILE_REPORT")  # a --json report of this tree, to iterate on the checks
    if reuse:
        report = json.loads(Path(reuse).read_text())
        return subprocess.CompletedProcess([], 1 if report["summary"]["failed"] else 0, "", ""), report["summary"], report["rows"]
    out = tmp_path_factory.mktemp("compile") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPORT), "--check", "--csv-dir", "", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    print(f"compile check: {time.perf_counter() - start:.0f} s\n{proc.stdout[-3000:]}")
    assert out.exists(), proc.stdout[-5000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())
    return proc, report["summary"], report["rows"]


def test_every_variant_compiles_and_fits(compiled):
    proc, summary, _ = compiled
    failed = [f"{r['target']} {r['kernel']} [{r['config']}] {r['variant']}: {r['status']} "
              f"(regs {r.get('registers')}, spill {r.get('spill_bytes')}, smem {r.get('shared_bytes')}) "
              f"{r.get('error', '')[:500]}" for r in summary["failed"]]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_every_kernel_is_launched_by_the_scenarios(compiled):
    _, summary, rows = compiled
    # a new kernel no scenario reaches would silently escape the check
    assert summary["kernels_defined"] and summary["kernels_launched"] == summary["kernels_defined"]
    for target in ("sm90", "sm80"):
        assert {r["kernel"] for r in rows if r["target"] == target and r["status"] == "ok"} == set(summary["kernels_defined"])


def test_every_autotune_config_is_compiled_or_pruned(compiled):
    _, summary, rows = compiled
    sys.path.insert(0, str(REPORT.parent))
    for kernel, configs in summary["autotune_configs"].items():
        for target in ("sm90", "sm80"):
            seen = {r["config"] for r in rows if r["kernel"] == kernel and r["target"] == target}
            assert seen == set(configs), (kernel, target, set(configs) - seen)
            # the bf16 runs: each config compiled (and fitting) or pruned by the kernel for that target
            bf16 = {r["config"] for r in rows if r["kernel"] == kernel and r["target"] == target
                    and r["dtype"] == "bf16" and r["status"] in ("ok", "pruned")}
            assert bf16 == set(configs), (kernel, target, set(configs) - bf16)


def _triton_version(rows) -> tuple[int, int]:
    return tuple(int(p) for p in rows[0]["triton"].split(".")[:2])


def test_masked_gemm_keeps_the_masked_weight_in_registers_on_hopper(compiled):
    _, _, rows = compiled
    gemm = [r for r in rows if r["kernel"].endswith("_masked_matmul_kernel") and r["status"] == "ok"]
    hopper_16bit = [r for r in gemm if r["target"] == "sm90" and r["dtype"] in ("bf16", "fp16")]
    assert hopper_16bit
    if _triton_version(gemm) < (3, 6):
        # checked: Triton 3.0 stores the masked tile to shared memory and feeds wgmma from there (one
        # more shared-memory round trip per tile); 3.6 and 3.9 keep it in registers. The fused GEMM is
        # an option, not the default, so older Tritons only lose speed on it.
        assert all(r["tensor_core"] == "wgmma" for r in hopper_16bit), hopper_16bit[0]
        return
    for r in hopper_16bit:
        assert (r["tensor_core"], r["wgmma_a_operand"]) == ("wgmma", "registers"), r
        # TTGIR: the left operand of every warp_group_dot is a register tensor (dot_op opIdx 0),
        # the right one a shared-memory descriptor
        assert r["ttgir_dots"], r
        for line in r["ttgir_dots"]:
            # "%acc = ttng.warp_group_dot %w, %a, %acc {attributes} : LEFT * RIGHT -> RESULT"
            left, right = line.split("} : ", 1)[1].split(" * ", 1)
            assert left.startswith("tensor<") and "opIdx = 0" in left, line
            assert right.startswith("!ttg.memdesc<"), line
    assert all(r["tensor_core"] == "mma" for r in gemm if r["target"] == "sm80" and r["dtype"] in ("bf16", "fp16"))


def test_weight_gradient_gemm_uses_tensor_cores(compiled):
    _, _, rows = compiled
    ste = [r for r in rows if r["kernel"].endswith("_ste_grad_kernel") and r["status"] == "ok" and r["dtype"] == "bf16"]
    assert ste and all(r["tensor_core"] == {"sm90": "wgmma", "sm80": "mma"}[r["target"]] for r in ste)


def test_limit_checks_fail_on_unlaunchable_compiles():
    report = _load_report()
    ok = {"shared_bytes": 100, "shared_limit": 163 * 1024, "registers": 128, "spill_bytes": 0}
    assert report.limit_status(ok) == "ok"
    assert report.limit_status({**ok, "shared_bytes": 163 * 1024 + 1}) == "over_shared_limit"
    assert report.limit_status({**ok, "registers": 256}) == "over_register_limit"
    assert report.limit_status({**ok, "spill_bytes": report.SPILL_BUDGET_BYTES + 8}) == "spills"
    assert report.limit_status({**ok, "spill_bytes": report.SPILL_BUDGET_BYTES + 8, "odd_shape": True}) == "spills_odd_size"
    assert "spills" not in report.PASSING and "over_shared_limit" not in report.PASSING


def test_wgmma_operand_source_is_read_from_ptx():
    report = _load_report()
    regs = "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%r1,%r2}, {%r9,%r10,%r11,%r12}, %rd4, %p1, 1, 1, 0;"
    smem = "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%r1,%r2}, %rd3, %rd4, %p1, 1, 1, 1, 0, 1;"
    assert report.tensor_core_use(regs) == ("wgmma", "registers")
    assert report.tensor_core_use(smem) == ("wgmma", "shared")
    assert report.tensor_core_use(regs + "\n" + smem) == ("wgmma", "mixed")
    assert report.tensor_core_use("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {}") == ("mma", "")
    assert report.tensor_core_use("fma.rn.f32 %f1, %f2, %f3, %f4;") == ("", "")


def test_prune_drops_configs_over_the_shared_memory_limit(monkeypatch):
    import torch
    import triton

    from maskedbert.kernels import _runtime
    from maskedbert.kernels import masked_matmul_kernel as masked_matmul
    from maskedbert.kernels import ste_grad_kernel as ste_grad

    def cfg(bj, bm, br, warps, stages):
        return triton.Config({"BLOCK_J": bj, "BLOCK_M": bm, "BLOCK_R": br}, num_warps=warps, num_stages=stages)

    configs = [cfg(128, 128, 64, 8, 3), cfg(64, 64, 64, 4, 4)]
    monkeypatch.setattr(_runtime, "shared_memory_limit", lambda device: 163 * 1024)
    a32, a16 = torch.empty(4, 4), torch.empty(4, 4, dtype=torch.bfloat16)
    # fp32: 3 stages x 64 x (128 + 128) x 4 B = 192 KiB > 163 KiB; bf16 halves it
    assert masked_matmul._prune_configs(configs, {"a_ptr": a32, "w_ptr": a32}, DOT_PRECISION="tf32") == configs[1:]
    assert masked_matmul._prune_configs(configs, {"a_ptr": a16, "w_ptr": a16}, DOT_PRECISION="tf32") == configs
    # an FMA dot (fp32 IEEE) keeps <= 32 accumulator elements per thread: 128x128 on 256 threads is 64
    monkeypatch.setattr(_runtime, "shared_memory_limit", lambda device: 1 << 30)
    assert masked_matmul._prune_configs(configs, {"a_ptr": a32, "w_ptr": a32}, DOT_PRECISION="ieee") == configs[1:]
    # never empty: the smallest config stays when none fits
    monkeypatch.setattr(_runtime, "shared_memory_limit", lambda device: 1024)
    assert masked_matmul._prune_configs(configs, {"a_ptr": a16, "w_ptr": a16}, DOT_PRECISION="tf32") == configs[1:]
    ste = [triton.Config({"BLOCK_N": 128, "BLOCK_K": 128, "BLOCK_M": 64}, num_warps=8, num_stages=3)]
    assert ste_grad._prune_configs(ste, {"dy_ptr": a32, "x_ptr": a32}, DOT_PRECISION="ieee") == ste


# kernels whose atomics must all be relaxed (each atomic only accumulates or hands out a slot)
ATOMIC_KERNELS = {"ste_grad_kernel._ste_grad_kernel", "topk_radix._radix_histogram_kernel",
                  "topk_radix._candidate_histogram_kernel", "topk_radix._mask_kernel", "topk_radix._bracket_kernel"}


def test_atomics_kernels_have_no_gpu_scope_barrier(compiled):
    _, _, rows = compiled
    atomic = [r for r in rows if r["target"] == "sm90" and r["status"] == "ok" and "gpu_membars" in r]
    assert ATOMIC_KERNELS <= {r["kernel"] for r in atomic}, ATOMIC_KERNELS - {r["kernel"] for r in atomic}
    barriers = [f"{r['kernel']} [{r['config']}] {r['variant']}: {r['gpu_membars']}" for r in atomic if r["gpu_membars"]]
    assert not barriers, "\n".join(barriers)


_MEMBAR_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import triton, triton.language as tl
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
import compile_report

@triton.jit
def acq_rel(p, v):
    tl.atomic_add(p + tl.arange(0, 128), tl.load(v + tl.arange(0, 128)))

@triton.jit
def relaxed(p, v):
    tl.atomic_add(p + tl.arange(0, 128), tl.load(v + tl.arange(0, 128)), sem="relaxed")

for fn in (acq_rel, relaxed):
    try:
        src = ASTSource(fn, {"p": "*fp32", "v": "*fp32"}, {})
    except TypeError:
        src = ASTSource(fn, {"p": "*fp32", "v": "*fp32"})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    print(fn.__name__, compile_report.has_atomics(c.asm["ptx"]), compile_report.gpu_membars(compile_report.sass(c.asm["cubin"])))
"""


def test_barrier_check_sees_the_default_atomic_order(tmp_path):
    # the check above can fail: an acq_rel atomic (Triton's default) shows a GPU-scope MEMBAR
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    probe = tmp_path / "membar_probe.py"  # @triton.jit reads the kernel's source from its file
    probe.write_text(_MEMBAR_PROBE)
    proc = subprocess.run([sys.executable, str(probe), str(REPORT.parent)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    acq_atomic, acq_barriers = found["acq_rel"].split()
    rel_atomic, rel_barriers = found["relaxed"].split()
    assert acq_atomic == rel_atomic == "True"
    assert int(acq_barriers) >= 1 and int(rel_barriers) == 0, found
