#!/usr/bin/env bash
# The GPU compile check (tests/test_compile_gpu.py) under Triton 3.6, the GPU machine's version, in
# a second small virtual environment (CPU torch first: a bare torch requirement pulls a CUDA build).
# The main CI venv runs the same test under the newest Triton. Prints the check's wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TMPDIR:-/tmp}/maskedbert-ci-triton36
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0 "triton==3.6.*" pytest numpy
"$VENV/bin/python" -m pip install -q --no-deps -e .
start=$SECONDS
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_compile_gpu.py
echo "compile check under triton $("$VENV/bin/python" -c 'import triton; print(triton.__version__)'): $((SECONDS - start)) s"
