#!/usr/bin/env bash
# GPU latency of the compressed torch models vs the dense model (issue 14), for a lent GPU machine.
#
#   bash benchmarks/gpu.sh "$OUT"                                      # on the device: $OUT/gpu.json,
#                                                                      #   gpu_log.txt, nvidia_smi.txt
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh /tmp/gpu --rehearse # CPU rehearsal here
#
# Arguments after the output folder go to `python -m benchmarks.gpu_bench`. Needs only torch and
# transformers (the device image has both; no Hydra, ONNX Runtime or the MiniLM package needed).
# The folder must not be benchmarks/results: copy a GPU run's gpu.json there by hand afterwards
# (gpu_bench itself refuses to write benchmarks/results/gpu.json from a CPU run).
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-${OUT:-}}"
if [ -z "$out_dir" ]; then
  echo "usage: bash benchmarks/gpu.sh OUT_DIR [gpu_bench args]   (on the device: bash benchmarks/gpu.sh \"\$OUT\")" >&2
  exit 2
fi
shift || true
mkdir -p "$out_dir"
if [ "$(cd "$out_dir" && pwd -P)" = "$(cd benchmarks/results && pwd -P)" ]; then
  echo "gpu.sh: write to another folder (\$OUT on the device) and copy gpu.json into benchmarks/results" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi || echo "nvidia-smi: not available"; } > "$out_dir/nvidia_smi.txt" 2>&1
"${PYTHON:-python3}" -m benchmarks.gpu_bench --out "$out_dir/gpu.json" "$@" 2>&1 | tee "$out_dir/gpu_log.txt"
