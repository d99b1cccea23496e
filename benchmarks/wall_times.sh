#!/usr/bin/env bash
# demo_wall_s and test_wall_s from a fresh clone with an empty cache (MEASURE.md "Wall times"),
# then warm (same clone, venv and caches kept). Writes benchmarks/results/wall_times.json.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'cp "$work"/*.log "${LOG_DIR:-/tmp}"/ 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/shared" && ln -s "$(cd "$repo/../shared" && pwd)/data" "$work/shared/data"
git clone -q "$repo" "$work/main"
cd "$work/main"
t() { local s=$(date +%s.%N); "$@" > "$work/$1-$2.log" 2>&1 || echo "FAILED: $*" >&2; echo "$(date +%s.%N) - $s" | bc; }
# WARM=1 also times a second run in the same clone (venv and teacher cache kept)
demo_cold=$(t make demo); demo_warm=null
[ "${WARM:-0}" = 1 ] && demo_warm=$(t make demo DEMO_ARGS=run.overwrite=true)
quick_acc=$(.venv/bin/python -c "import json,glob; m=json.load(open(glob.glob('outputs/int8/*/manifest.json')[0])); print(m['eval']['models']['teacher_torch']['score'])")
rm -rf .venv
test_cold=$(t make test); test_warm=null
[ "${WARM:-0}" = 1 ] && test_warm=$(t make test)
tests=$(grep -E "passed|failed" "$work/make-test.log" | tail -1)
cat > "$repo/benchmarks/results/wall_times.json" <<JSON
{"demo_wall_s": $demo_cold, "demo_wall_warm_s": $demo_warm, "test_wall_s": $test_cold, "test_wall_warm_s": $test_warm,
 "teacher_quick_acc": $quick_acc, "test_summary": "$tests",
 "wall_note": "fresh git clone, no venv, empty teacher cache; warm = second run in the same clone (venv and teacher cache kept; demo rerun with run.overwrite=true)"}
JSON
cat "$repo/benchmarks/results/wall_times.json"
