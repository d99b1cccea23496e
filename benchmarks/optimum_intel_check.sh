#!/usr/bin/env bash
# Does optimum-intel's OVModelForSequenceClassification load our deployed IR dir and give the same
# logits as our OpenVINO runner? Checked once in a side venv (optimum-intel pins its own transformers);
# the verdict goes to benchmarks/results/optimum_intel_check.json. torchvision is left out on purpose:
# PyPI's torchvision 0.28.0 does not load beside the CPU torch 2.13.0 ("operator torchvision::nms does
# not exist"), and with it present transformers' AutoProcessor (imported by optimum-intel) fails.
#   bash benchmarks/optimum_intel_check.sh RUN_DIR     # a finished run with deploy=openvino|auto
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
run_dir=$(cd "$1" && pwd)
venv=${OPTIMUM_VENV:-/tmp/optimum-intel-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # the CPU torch we pin and optimum-intel with its OpenVINO extra; no torchvision (see above)
  "$venv/bin/pip" install -q "torch==2.13.0" "optimum-intel[openvino]" -c "$repo/constraints.txt" 2>&1 | tail -3
  "$venv/bin/pip" uninstall -y -q torchvision 2>/dev/null || true
fi
"$repo/.venv/bin/python" - "$run_dir" > /tmp/optimum_ref.json <<'PY'
import json, sys
from pathlib import Path
import numpy as np
from compresslab.bench.openvino_runner import OpenVinoRunner
from compresslab.manifest import read_json
from transformers import AutoTokenizer
rd = Path(sys.argv[1]); m = read_json(rd / "manifest.json")
ir_dir = (rd / m["export"]["openvino"]["path"]).parent
tok = AutoTokenizer.from_pretrained(str(ir_dir))
texts = ["a gripping, beautifully acted film", "dull and far too long", "it is a movie"]
enc = {k: v for k, v in tok(texts, padding=True, return_tensors="np").items()}
out = OpenVinoRunner(ir_dir / "openvino_model.xml", 2, "f32").run(enc)
print(json.dumps({"ir_dir": str(ir_dir), "texts": texts, "logits": out.tolist()}))
PY
"$venv/bin/python" - /tmp/optimum_ref.json "$repo/benchmarks/results/optimum_intel_check.json" <<'PY'
import json, sys
import numpy as np
ref = json.load(open(sys.argv[1]))
out = {"ir_dir": ref["ir_dir"]}
try:
    import optimum.intel, openvino, transformers
    from optimum.intel import OVModelForSequenceClassification
    from transformers import AutoTokenizer
    from importlib.metadata import version
    out["versions"] = {"optimum-intel": version("optimum-intel"),
                       "openvino": openvino.__version__, "transformers": transformers.__version__}
    model = OVModelForSequenceClassification.from_pretrained(ref["ir_dir"], ov_config={"INFERENCE_PRECISION_HINT": "f32"})
    tok = AutoTokenizer.from_pretrained(ref["ir_dir"])
    logits = model(**tok(ref["texts"], padding=True, return_tensors="pt")).logits.detach().numpy()
    diff = float(np.abs(logits - np.array(ref["logits"])).max())
    out.update(loaded=True, max_abs_diff_vs_compresslab=diff, ok=diff < 1e-4)
except Exception as e:  # the verdict is the point: record what failed
    out.update(loaded=False, ok=False, error=f"{type(e).__name__}: {str(e)[:500]}")
import os
allr = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {}
allr[ref["ir_dir"].split("/outputs/", 1)[-1]] = out  # one entry per IR checked
json.dump(allr, open(sys.argv[2], "w"), indent=2)
print(json.dumps(out, indent=2))
PY
