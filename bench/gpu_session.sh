#!/usr/bin/env bash
# The whole GPU session in ONE device call (10-minute limit; this plan takes at most ~9.5 minutes):
# install, then the decision-relevant measurements first, each under its own timeout, every row
# written as it is measured (a step cut short keeps what it measured):
#   1. bench/masked_linear.py --quick: the op vs both dense baselines and eager, BERT-base shapes,
#      M = 4096 and 8192, bf16 fwd+bwd (plain and CUDA-graph timings; no torch.compile providers:
#      their compile time does not fit); the dispatch table from its measurements   <= 150 s
#   2. bench/train_step.py, BERT-base, sequence length 128                         <= 115 s
#   3. bench/topk.py on BERT-base                                                  <=  50 s
#   4. a torch.profiler trace of 3 mask-training steps (op table + Chrome trace)    <=  60 s
#   5. the `gpu`-marked tests, last (at most 5 failures, then stop)                <= 150 s
# Outputs (8 files, directly under $OUT, each capped at 8 MiB): session.log (every step's output and
# its exit status), masked_linear.csv, dispatch_table.json, train_step.csv, topk.csv, profile.txt,
# profile.json.gz, gpu_tests.txt.
#
#   bash bench/gpu_session.sh            # on the GPU machine (OUT defaults to /tmp/maskedbert-out)
#   bash bench/gpu_session.sh --dry-run  # anywhere, on CPU, < 2 min: every command the real run makes
#                                        # is checked (arguments parse, the gpu tests collect, output
#                                        # names are valid); nothing is timed or installed
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu_session.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/maskedbert-out}
PY=${PYTHON:-python3}
MAX_BYTES=$((8 * 1024 * 1024))
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

# every command of the session, defined once for the real run and the dry run
INSTALL=(-m pip install -q --no-deps --no-build-isolation -e .)
GPU_TESTS=(-m pytest -m gpu --maxfail=5 -q --no-header -p no:cacheprovider -rfE --tb=short tests)
MASKED_LINEAR=(bench/masked_linear.py --quick --providers dense,dense_frozen_bias,twin,triton_dense,triton_fused,triton --csv "$OUT/masked_linear.csv" --write-dispatch-table "$OUT/dispatch_table.json")
TOPK=(bench/topk.py --models bert-base --csv "$OUT/topk.csv")
TRAIN_STEP=(bench/train_step.py --models base --seqs 128 --csv "$OUT/train_step.csv" --plot "")
PROFILE=(bench/train_step.py --models base --seqs 128 --modes mb_topk --sparsities 50 --warmup 3 --profile "$OUT/profile.txt")
OUTPUTS=(session.log masked_linear.csv dispatch_table.json train_step.csv topk.csv profile.txt profile.json.gz gpu_tests.txt)
LOG="$OUT/session.log"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME SECONDS OUTPUT_FILE PYTHON_ARGS...: run under its own timeout, output capped and streamed
step() {
  local name=$1 seconds=$2 file=$3
  shift 3
  local start=$SECONDS
  log "start $name (timeout ${seconds}s): $PY $*"
  timeout -k 10 "$seconds" "$PY" "$@" 2>&1 | head -c "$MAX_BYTES" | tee -a "$file" >/dev/null
  local rc=${PIPESTATUS[0]}
  [[ $file != "$LOG" ]] && tail -n 40 "$file" >>"$LOG"
  log "end $name: exit $rc$([[ $rc == 124 ]] && echo ' (timed out)') after $((SECONDS - start))s"
}

if [[ $DRY == 1 ]]; then
  LOG=/dev/null
  echo "dry run: checking the session's commands (OUT=$OUT)"
  "$PY" - "$OUT" "${OUTPUTS[@]}" -- "${MASKED_LINEAR[@]}" -- "${TOPK[@]}" -- "${TRAIN_STEP[@]}" -- "${PROFILE[@]}" <<'PY'
import importlib.util, os, re, sys

out, rest = sys.argv[1], sys.argv[2:]
groups, cur = [], []
for a in rest:
    if a == "--":
        groups.append(cur); cur = []
    else:
        cur.append(a)
groups.append(cur)
outputs, ml, topk, train, prof = groups
problems = []
if len(set(outputs)) > 8:
    problems.append(f"{len(set(outputs))} output files; at most 8")
for name in outputs:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        problems.append(f"output name {name!r} is not a plain file name")
def paths(argv):  # every argument naming a file must be one of OUTPUTS, directly under OUT
    for a in argv:
        if a.startswith(out + "/") or a.startswith(out):
            rel = os.path.relpath(a, out)
            if rel not in outputs:
                problems.append(f"{a} is not one of the declared outputs directly under {out}")
def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
for argv in (ml, topk, train, prof):
    paths(argv[1:])
if os.path.splitext(prof[prof.index("--profile") + 1])[0] + ".json.gz" not in [os.path.join(out, o) for o in outputs]:
    problems.append("the profile's Chrome trace (beside --profile, .json.gz) is not a declared output")
try:
    args = load(ml[0]).parse_args(ml[1:])
    print(f"ok {ml[0]}: {args.shapes} M={args.tokens} {args.dtypes} {args.modes} providers={args.providers}")
except SystemExit as e:
    problems.append(f"{ml[0]} rejects its arguments (exit {e.code})")
for argv in (train, prof):
    try:
        mod = load(argv[0])
        args = mod.parse_args(argv[1:])
        modes = mod.mode_list(args.modes.split(","), [int(s) for s in args.sparsities.split(",")])
        print(f"ok {argv[0]}: models={args.models} seqs={args.seqs} modes={modes} profile={args.profile or '-'}")
    except SystemExit as e:
        problems.append(f"{argv[0]} rejects its arguments (exit {e.code})")
mod = load(topk[0])
seen = []
mod.run = lambda args: seen.append(args) or []  # parse and validate, measure nothing
mod.print_table = lambda rows: None
mod.append_csv = lambda rows, path: None
try:
    mod.main(topk[1:])
    print(f"ok {topk[0]}: models={seen[0].models} scores={seen[0].scores} backends={seen[0].backends}")
except SystemExit as e:
    problems.append(f"{topk[0]} rejects its arguments (exit {e.code})")
for p in problems:
    print("PROBLEM:", p)
sys.exit(1 if problems else 0)
PY
  rc=$?
  collected=$(TRITON_INTERPRET=1 "$PY" "${GPU_TESTS[@]}" --collect-only 2>&1 | tail -n 3)
  echo "gpu tests: $collected"
  if ! grep -Eq '^[0-9]+ tests? collected|^[0-9]+/[0-9]+ tests collected' <<<"$collected"; then
    echo "PROBLEM: the gpu tests did not collect"; rc=1
  fi
  "$PY" -m pip --version >/dev/null || { echo "PROBLEM: no pip for the install step"; rc=1; }
  echo "dry run: $([[ $rc == 0 ]] && echo ok || echo FAILED)"
  exit $rc
fi

for f in "${OUTPUTS[@]}"; do rm -f "$OUT/$f"; done
step install 45 "$LOG" "${INSTALL[@]}"
"$PY" - <<'PY' 2>&1 | tee -a "$LOG"
import torch, triton, transformers
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| transformers", transformers.__version__)
PY
step masked_linear 150 "$LOG" "${MASKED_LINEAR[@]}"
step train_step 115 "$LOG" "${TRAIN_STEP[@]}"
step topk 50 "$LOG" "${TOPK[@]}"
step profile 60 "$LOG" "${PROFILE[@]}"
step gpu_tests 150 "$OUT/gpu_tests.txt" "${GPU_TESTS[@]}"
log "session done after ${SECONDS}s; files: $(cd "$OUT" && ls -1 | tr '\n' ' ')"
