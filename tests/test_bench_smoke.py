"""bench/masked_linear.py: the --cpu-smoke run end to end, and its checking and verdict logic."""
from __future__ import annotations

import csv
import datetime
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.triton  # runs Triton kernels (interpreter or GPU)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "masked_linear.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_masked_linear", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args, timeout=180):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_smoke_writes_checked_rows(tmp_path):
    out = tmp_path / "results" / "masked_linear.csv"  # the directory does not exist yet
    proc = run_script("--cpu-smoke", "--csv", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "triton_fused" in proc.stdout and "x dense" in proc.stdout  # the table was printed
    # each row was printed as it was measured, before the summary table
    assert proc.stdout.index("triton_fused") < proc.stdout.index("summary")
    # a second run appends without a second header
    proc = run_script("--cpu-smoke", "--modes", "fwd", "--settings", "imp", "--providers", "dense,twin",
                      "--csv", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert text.count("timestamp,device,") == 1
    rows = list(csv.DictReader(text.splitlines()))
    bench = load_bench()
    assert list(rows[0]) == bench.CSV_FIELDS
    providers = bench.CPU_PROVIDERS
    # all modes x both settings, then both dense baselines + eager + twin for one mode
    assert len(rows) == len(providers) * 3 * 2 + 4
    for row in rows:
        assert row["status"] == "ok", row
        assert row["device"].startswith("cpu") and row["torch"] == torch.__version__
        assert row["triton"] and row["maskedbert"]
        datetime.datetime.fromisoformat(row["timestamp"])
        assert (row["M"], row["N"], row["K"], row["dtype"]) == ("33", "24", "40", "fp32")
        assert float(row["median_ms"]) > 0
        assert row["target"] == ""  # targets are judged on a GPU only
        assert row["dense_baseline"] == ("dense_frozen_bias" if row["setting"] == "frozen" else "dense")
        if row["provider"] == row["dense_baseline"]:
            assert float(row["ratio_to_dense"]) == 1.0
        if row["provider"] not in ("dense", "dense_frozen_bias", "eager"):
            assert float(row["check_rel_err"]) < 1e-4, row
        assert row["cudagraph_ms"] == ""  # CUDA only
    seen = {(r["provider"], r["mode"], r["setting"]) for r in rows}
    for p in ("triton_dense", "triton_fused", "triton"):
        for mode in ("fwd", "bwd", "fwd+bwd"):
            assert (p, mode, "frozen") in seen and (p, mode, "imp") in seen


def test_without_cuda_it_refuses_to_produce_gpu_numbers(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_script("--quick", "--csv", str(tmp_path / "x.csv"), timeout=60)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stdout
    assert not (tmp_path / "x.csv").exists()


def test_mismatching_provider_is_caught(capsys):
    # a masked_linear that is off by a constant must be flagged and not timed
    from maskedbert.kernels import masked_linear, pack_mask

    bench = load_bench()
    args = bench.parse_args(["--cpu-smoke", "--modes", "fwd", "--settings", "frozen",
                             "--providers", "dense,twin", "--csv", ""])
    wrong = lambda *a, **k: masked_linear(*a, **k) + 0.1
    rows, mismatches = bench.run(args, wrong, pack_mask)
    assert len(mismatches) == 1 and "twin" in mismatches[0]
    twin = next(r for r in rows if r["provider"] == "twin")
    assert twin["status"] == "MISMATCH" and twin["median_ms"] is None
    assert "MISMATCH" in capsys.readouterr().err
    rows, mismatches = bench.run(args, masked_linear, pack_mask)
    assert mismatches == []


def test_target_verdict():
    bench = load_bench()
    # frozen (mask training) is judged against the dense layer with a frozen bias
    base = {"dense_frozen_bias": {"median_ms": 1.0}, "dense": {"median_ms": 1.1}, "eager": {"median_ms": 1.5}}
    assert bench.target_verdict({"median_ms": 1.04}, base, "frozen") == "PASS"
    verdict = bench.target_verdict({"median_ms": 1.08}, base, "frozen")
    assert verdict.startswith("MISS") and "1.080x dense > 1.05x" in verdict
    # within 1.05x but the overhead is more than 0.3 of eager's: (1.04 - 1) > 0.3 (1.1 - 1)
    verdict = bench.target_verdict({"median_ms": 1.04}, {**base, "eager": {"median_ms": 1.1}}, "frozen")
    assert verdict.startswith("MISS") and "overhead 0.40 of eager's" in verdict
    # imp trains W and b: the trained-bias dense layer is the baseline
    assert bench.target_verdict({"median_ms": 1.14}, base, "imp") == "PASS"
    assert bench.target_verdict({"median_ms": 1.0}, {"eager": {"median_ms": 2.0}}, "frozen").startswith("MISS")
    for M in (4096, 8192):
        assert bench.is_target_config(M, 768, 3072, torch.bfloat16, "fwd+bwd", "frozen")
    assert not bench.is_target_config(8192, 1024, 1024, torch.bfloat16, "fwd+bwd", "frozen")
    assert not bench.is_target_config(16384, 768, 768, torch.bfloat16, "fwd+bwd", "frozen")
    assert not bench.is_target_config(8192, 2304, 768, torch.bfloat16, "fwd+bwd", "frozen")


def test_cli_filters():
    bench = load_bench()
    args = bench.parse_args(["--quick"])
    assert args.tokens == [4096, 8192] and args.shapes == bench.BERT_BASE and args.dtypes == ["bf16"]
    assert bench.BERT_BASE == [(768, 768), (3072, 768), (768, 3072)]
    assert args.modes == ["fwd+bwd"] and args.settings == ["frozen"] and args.providers == bench.GPU_PROVIDERS
    args = bench.parse_args(["--shapes", "large,64x96", "--dtypes", "fp16", "--providers", "triton_fused"])
    assert args.shapes == bench.BERT_LARGE + [(64, 96)]
    assert args.providers == ["dense", "dense_frozen_bias", "eager", "triton_fused"]
    assert args.tokens == bench.TOKENS
    for bad in (["--dtypes", "fp64"], ["--modes", "forward"], ["--shapes", "768"],
                ["--cpu-smoke", "--providers", "compile"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_rows_are_written_as_they_are_measured(tmp_path, monkeypatch, capsys):
    # a run cut short (a GPU slot's timeout) keeps every row measured so far: one CSV append per row
    bench = load_bench()
    appended = []
    real = bench.append_csv
    monkeypatch.setattr(bench, "append_csv", lambda rows, path: appended.append(len(rows)) or real(rows, path))
    out = tmp_path / "ml.csv"
    assert bench.main(["--cpu-smoke", "--modes", "fwd", "--settings", "imp", "--providers", "dense,twin",
                       "--csv", str(out)]) == 0
    assert appended == [1, 1, 1, 1]  # dense, dense_frozen_bias, eager, twin: each written alone
    assert len(list(csv.DictReader(out.read_text().splitlines()))) == 4
