"""What one-shot oBERT costs (issue #3): Fisher time and memory vs block size and model size.

Each configuration runs in a fresh subprocess (so its peak RSS, VmHWM, is its own) and prunes a
model one-shot to 50% on SST-2 train mini-batches (batch 16). The model is MiniLM-L6 (the embedded
default) or a BERT-base-shaped BertForSequenceClassification with random weights (12 layers, hidden
768, FFN 3072: cost does not depend on the values). Results go to results/obert.json["cost"].

    python benchmarks/obert_cost.py            # the grid below
    python benchmarks/obert_cost.py --one '{"model": "bert-base", "num_grads": 32, "block_size": 50, "max_mb": 9000}'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "obert.json"
GRID = [
    {"model": "minilm", "num_grads": 64, "block_size": 16, "max_mb": None},
    {"model": "minilm", "num_grads": 64, "block_size": 50, "max_mb": None},
    {"model": "minilm", "num_grads": 64, "block_size": 100, "max_mb": None},
    {"model": "minilm", "num_grads": 64, "block_size": 50, "max_mb": 700},   # streamed in groups
    {"model": "bert-base", "num_grads": 32, "block_size": 50, "max_mb": 9000},
]


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(spec: dict) -> dict:
    """Runs in the child: build the model, one-shot oBERT to 50%, report the pass's Fisher metrics."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from compresslab.data.tasks import load_task, resolve_data_root
    from compresslab.checkpoint import load_pretrained
    from compresslab.passes.obert import OBert
    from compresslab.types import PassContext

    torch.manual_seed(0)
    torch.set_num_threads(2)
    minilm, tok = load_pretrained("embedded", kind="classification", num_labels=2)
    if spec["model"] == "bert-base":
        model = BertForSequenceClassification(BertConfig(num_labels=2, attn_implementation="eager")).eval()
    else:
        model = minilm
    del minilm
    task = load_task("sst2", resolve_data_root(None), seed=42)
    ctx = PassContext(tokenizer=tok, task=task, run_dir=Path("/tmp/obert-cost"), step_dir=Path("/tmp/obert-cost/s"),
                      device=torch.device("cpu"), seed=42, teacher=None, max_length=128, batch_size=32,
                      cache_dir=Path("/tmp/obert-cost/c"), model_source="")
    encoder = sum(m.weight.numel() for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}.")
    t0 = time.perf_counter()
    res = OBert(sparsity=0.5, mode="oneshot", recovery={"steps": 0}, num_grads=spec["num_grads"],
                block_size=spec["block_size"], fisher_max_mb=spec["max_mb"]).apply(model, ctx)
    m = {k: v for k, v in res.metrics.items() if k.startswith("fisher")}
    return {**spec, **m, "encoder_weights": encoder, "pass_s": round(time.perf_counter() - t0, 1),
            "vmhwm_mb": round(_vmhwm_mb(), 1), "threads": 2}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", help="run one spec (JSON) in this process and print the result")
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(json.loads(args.one))), flush=True)
        return
    from _results import ResultsFile  # sibling module (script dir)

    results = ResultsFile(RESULTS)  # stamps meta.machine_load: the load while each child ran (its wall time)
    for spec in GRID:
        key = f"{spec['model']}_B{spec['block_size']}_g{spec['num_grads']}" + (f"_max{spec['max_mb']}" if spec["max_mb"] else "")
        if results.has(["cost", key]):
            continue
        print(f"== {key}", flush=True)
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(f"{key} failed (exit {out.returncode})", flush=True)
            continue
        row = json.loads(line[-1][7:])
        print(row, flush=True)
        results.put(["cost", key], row)


if __name__ == "__main__":
    main()
