#!/usr/bin/env bash
# demo_wall_s and test_wall_s from a fresh clone with an empty cache (MEASURE.md "Wall times"),
# then warm (same clone, venv and caches kept). Merges into benchmarks/results/wall_times.json.
# Each wall time comes with <key>_machine_load: other processes' CPU use while it ran (busy: stretched),
# measured by benchmarks/_timed.py with this checkout's venv.
#   WARM=1   also time a second run in the same clone (venv and teacher cache kept)
#   ONLY=demo | ONLY=test   time one of the two
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'cp "$work"/*.log "${LOG_DIR:-/tmp}"/ 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/shared" && ln -s "$(cd "$repo/../shared" && pwd)/data" "$work/shared/data"
git clone -q "$repo" "$work/main"
cd "$work/main"
py="$repo/.venv/bin/python"  # this checkout's venv: _timed.py reads the CPU clocks with compresslab
# t KEY CMD...: run CMD (log in $work), put KEY (its wall seconds) and KEY's machine_load
t() { local key=$1; shift; "$py" "$repo/benchmarks/_timed.py" "$work/$key.time.json" "$@" > "$work/$1-$2.log" 2>&1 \
        || echo "FAILED: $*" >&2
      put "$key" "$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['wall_s'])" "$work/$key.time.json")"
      put "${key%_s}_machine_load" "$("$py" -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['machine_load']))" "$work/$key.time.json")"; }
out=$work/new.json
echo '{}' > "$out"
put() { python3 -c "import json,sys; d=json.load(open('$out')); d[sys.argv[1]]=json.loads(sys.argv[2]); json.dump(d,open('$out','w'))" "$1" "$2"; }
if [ "${ONLY:-}" != test ]; then
  t demo_wall_s make demo
  [ "${WARM:-0}" = 1 ] && t demo_wall_warm_s make demo DEMO_ARGS=run.overwrite=true
  put demo_summary "$(.venv/bin/python -c "
import glob, json
m = json.load(open(sorted(glob.glob('outputs/*/*/manifest.json'))[0]))
e = m['eval']['models']
print(json.dumps({'pipeline': m['pipeline'], 'teacher_quick_acc': e['teacher_torch']['score'],
                  'deployed_acc': e['deployed']['score'], 'deployed_agreement': e['deployed'].get('agreement'),
                  'deployed_drop': e['teacher_torch']['score'] - e['deployed']['score'],
                  'speedup_b32': (m.get('bench') or {}).get('speedups', {}).get('deployed', {}).get('b32xs128'),
                  'speedup_b32_vs_best_dense': (m.get('bench') or {}).get('speedups_best_dense', {}).get('deployed', {}).get('b32xs128'),
                  'disk': m.get('disk'), 'machine_load': (m.get('bench') or {}).get('machine_load'),
                  'steps_wall_s': {s['name']: s.get('wall_s') for s in m['steps']}}))")"
  rm -rf .venv
fi
if [ "${ONLY:-test}" != demo ]; then
  t test_wall_s make test
  [ "${WARM:-0}" = 1 ] && t test_wall_warm_s make test
  put test_summary "\"$(grep -E "passed|failed" "$work/make-test.log" | tail -1)\""
fi
put wall_note '"fresh git clone, no venv, empty teacher cache; warm = second run in the same clone (venv and teacher cache kept; demo rerun with run.overwrite=true)"'
python3 - "$repo/benchmarks/results/wall_times.json" "$out" <<'PY'
import json, os, sys
dst, new = sys.argv[1], json.load(open(sys.argv[2]))
old = json.load(open(dst)) if os.path.exists(dst) else {}
old.update(new)
json.dump(old, open(dst, "w"), indent=2)
print(json.dumps(old, indent=2))
PY
