#!/usr/bin/env bash
# The GPU compile check (tests/test_compile_gpu.py: every kernel for sm_90 and sm_80) under one Triton
# version, in a throwaway virtual environment beside CPU torch (a bare torch requirement would pull
# a CUDA build). CI runs it for the oldest Triton the project supports and the GPU machine's:
#     bash .ci/compile_check_triton.sh 3.0.0
#     bash .ci/compile_check_triton.sh 3.6.0
# The main CI venv runs the same test under the newest Triton. Prints the check's wall time.
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 <triton version, e.g. 3.0.0 or 3.6.*>" >&2
    exit 2
fi
VERSION=$1
cd "$(dirname "$0")/.."
VENV=${TMPDIR:-/tmp}/maskedbert-ci-triton-${VERSION//[^0-9A-Za-z.]/_}
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0 "triton==$VERSION" pytest numpy
"$VENV/bin/python" -m pip install -q --no-deps -e .
start=$SECONDS
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_compile_gpu.py
echo "compile check under triton $("$VENV/bin/python" -c 'import triton; print(triton.__version__)'): $((SECONDS - start)) s"
