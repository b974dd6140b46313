#!/usr/bin/env bash
# pip must resolve maskedbert beside the torch a lab already has: the oldest supported (2.4.1, which pins
# triton 3.0.0), two in between, and the newest pip finds. Metadata only (--dry-run): nothing is installed.
# Run from the repository root inside a virtual environment.
set -uo pipefail
logs=$(mktemp -d)
torches=("torch==2.4.1" "torch==2.6.0" "torch==2.8.0" "torch")
for req in "${torches[@]}"; do
    ( pip install --dry-run --ignore-installed --quiet --report "$logs/$req.json" "$req" ".[dev,demo,slurm]" \
        > "$logs/$req.log" 2>&1; echo $? > "$logs/$req.rc" ) &
done
wait
failed=0
for req in "${torches[@]}"; do
    if [ "$(cat "$logs/$req.rc")" != 0 ]; then
        echo "resolution: maskedbert does NOT install beside $req:"; tail -20 "$logs/$req.log"; failed=1
        continue
    fi
    python - "$logs/$req.json" "$req" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
print(f"resolution: beside {sys.argv[2]}: " + ", ".join(f"{n} {got.get(n, '-')}" for n in ("torch", "triton", "transformers", "datasets")))
PY
done
rm -rf "$logs"
exit $failed
