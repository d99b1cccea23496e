"""Which int8 IR keeps the teacher's predictions on OpenVINO? Our static QDQ variants vs NNCF PTQ,
selected on the VALIDATION split (carved from train), reported on dev (MEASURE.md); latency is one
interleaved call (b32xs128, b1xs128) with the dense plain export on OpenVINO f32 and ORT fp32.

    python benchmarks/openvino_int8.py RUN_DIR [--variants ...] [--runs 20]

RUN_DIR: a finished ``+pipeline=int8 budget=bench`` run (its final torch model is the teacher).
Every variant calibrates on the same 300 seeded train examples (deploy.calibration_examples).
Results: benchmarks/results/openvino_int8.json.
"""

from __future__ import annotations

import argparse
import re
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "openvino_int8.json"
# name -> ours_int8_ir keyword arguments (None: NNCF PTQ)
# ORT's static QDQ defaults (our recipe until 2026-12-04): attention MatMuls and every MatMul output quantized,
# the residual Add reading the quantized LayerNorm output
_ALPHAS = ("0.5", "0.7", "0.8", "0.9", "0.95")  # deploy.smooth_alpha's default grid (conf/deploy/ort.yaml), in order
# Every variant names embeddings_int8: the recipe's default changed (2026-12-04.2), the rows of older runs did not
LEGACY = dict(attention_matmuls=True, matmul_outputs=True, float_residual=False, attention_scores=False,
              embeddings_int8=False)
NO_SCORES = dict(attention_matmuls=False, matmul_outputs=False, float_residual=True, attention_scores=False,
                 embeddings_int8=False)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "ours_minmax": dict(LEGACY, calibrate_method="minmax"),
    "ours_smooth_0.5": dict(LEGACY, calibrate_method="minmax", smooth_alpha=0.5),
    "ours_smooth_0.8": dict(LEGACY, calibrate_method="minmax", smooth_alpha=0.8),
    "ours_minmax_weights_only": dict(LEGACY, calibrate_method="minmax", attention_matmuls=False),
    "ours_minmax_ffn_out_fp32": dict(LEGACY, calibrate_method="minmax",
                                     exclude_pattern=r"layer\.\d+/output/dense/MatMul"),
    "nncf": None,
    "ours_percentile": dict(LEGACY, calibrate_method="percentile"),
    "ours_entropy": dict(LEGACY, calibrate_method="entropy"),
    "ours_smooth_0.5_percentile": dict(LEGACY, calibrate_method="percentile", smooth_alpha=0.5),
    # ORT's quantizer also quantizes every MatMul output, and hands the quantized LayerNorm output to the
    # residual Add: the two options below undo that, then the attention MatMuls (slow in int8 on OpenVINO)
    "ours_no_outputs": dict(LEGACY, calibrate_method="minmax", matmul_outputs=False),
    "ours_no_outputs_float_residual": dict(LEGACY, calibrate_method="minmax", matmul_outputs=False,
                                           float_residual=True),
    "ours_weights_only_no_outputs_float_residual": dict(NO_SCORES, calibrate_method="minmax"),
    "ours_weights_only_no_outputs_float_residual_ffn_out_fp32": dict(
        NO_SCORES, calibrate_method="minmax", exclude_pattern=r"layer\.\d+/output/dense/MatMul"),
    **{f"ours_weights_only_no_outputs_float_residual_{k}": dict(NO_SCORES, **kw) for k, kw in (
        ("smooth_0.5", dict(calibrate_method="minmax", smooth_alpha=0.5)),
        ("smooth_0.7", dict(calibrate_method="minmax", smooth_alpha=0.7)),
        ("smooth_0.8", dict(calibrate_method="minmax", smooth_alpha=0.8)),
        ("smooth_0.9", dict(calibrate_method="minmax", smooth_alpha=0.9)),
        ("smooth_0.8_percentile", dict(calibrate_method="percentile", smooth_alpha=0.8)),
        ("smooth_0.95", dict(calibrate_method="minmax", smooth_alpha=0.95)),
        ("percentile", dict(calibrate_method="percentile")))},
    # the recipe of 2026-12-04: the above plus Q.K^T in symmetric int8 before the head split (OpenVINO's int8
    # attention kernel); deploy.smooth_alpha's grid picks the strength
    "ours_recipe": dict(calibrate_method="minmax", embeddings_int8=False),
    **{f"ours_recipe_smooth_{a}": dict(calibrate_method="minmax", smooth_alpha=float(a), embeddings_int8=False)
       for a in _ALPHAS},
    # the recipe as ours_int8_ir's defaults now make it (2026-12-04.2): the same grid with the word-embedding
    # table stored as per-row int8 before its Gather (ORT's quantizer leaves it fp32: ~half of MiniLM's
    # weights; NNCF's IR stores it int8)
    **{f"ours_recipe_embed_int8_smooth_{a}": dict(calibrate_method="minmax", smooth_alpha=float(a),
                                                  embeddings_int8=True)
       for a in _ALPHAS},
}


# deploy.smooth_alpha's grid (_ALPHAS) over each recipe family: the key of deploy_grid_choice
GRIDS = {"ours_recipe": [f"ours_recipe_smooth_{a}" for a in _ALPHAS],
         "ours_recipe_embed_int8": [f"ours_recipe_embed_int8_smooth_{a}" for a in _ALPHAS]}
GRID = GRIDS["ours_recipe"]


def grid_choice(variants: dict[str, dict[str, Any]], grid: list[str] = GRID) -> dict[str, Any] | None:
    """What ``deploy`` would ship from the default SmoothQuant ``grid``: the highest validation agreement, a tie
    keeping the earlier strength (``export.openvino_int8.ours_int8_ir_chosen``'s rule); None if a grid
    variant was not run."""
    if not all(g in variants and "validation_agreement" in variants[g] for g in grid):
        return None
    best = max(grid, key=lambda g: (variants[g]["validation_agreement"], -grid.index(g)))
    return {"variant": best, "rule": "deploy.smooth_alpha grid: the highest validation agreement, a tie keeps the "
                                     "earlier strength", **{k: variants[best].get(k) for k in (
                                         "validation_agreement", "dev_agreement", "dev_acc", "b32_ms", "b1_ms",
                                         "size_bytes")}}


def grid_choices(variants: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """:func:`grid_choice` per recipe family whose grid ran (family -> choice); None if none did. Files written
    before session 27 (``results/openvino_int8.json``) hold the ``ours_recipe`` choice alone, unkeyed."""
    got = {fam: c for fam, g in GRIDS.items() if (c := grid_choice(variants, g)) is not None}
    return got or None


def main(argv: list[str]) -> None:
    import numpy as np

    from compresslab.bench import OrtRunner, measure_latency
    from compresslab.bench.env import hardware_fingerprint
    from compresslab.bench.latency import shape_key
    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.checkpoint import load
    from compresslab.cli import setup_process
    from compresslab.data.loaders import calibration_examples, make_loader
    from compresslab.data.tasks import load_run_task
    from compresslab.eval.evaluate import onnx_forward, predict, torch_forward
    from compresslab.export.openvino_int8 import nncf_int8_ir, ours_int8_ir
    from compresslab.manifest import git_sha, library_versions, read_json
    from transformers import AutoTokenizer

    from _results import ResultsFile  # sibling module (script dir)

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="results file (default: results/openvino_int8.json; a subset of variants belongs in its own)")
    a = ap.parse_args(argv)
    results = ResultsFile(a.out)  # every write stamps meta.machine_load
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    setup_process(2, 0)
    rd = a.run_dir
    m = read_json(rd / "manifest.json")
    cfg = m["config"]
    plain = rd / "export" / "model_unfused.onnx"
    tok = AutoTokenizer.from_pretrained(str(rd / "export"))
    task = load_run_task(cfg)
    ml = int(cfg["task"]["max_length"])
    calib = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in
             make_loader(calibration_examples(task.train, 300, int(cfg["seed"])), tok, 32, ml, shuffle=False)]
    teacher = load(next(rd / s["dir"] for s in m["steps"] if s["name"] == "finetune")).eval()
    splits = {s: list(getattr(task, s)) for s in ("validation", "dev")}
    ref = {s: predict(torch_forward(teacher), task.spec, ex, tok, max_length=ml) for s, ex in splits.items()}
    work = Path(tempfile.mkdtemp(prefix="ovint8-"))
    out: dict[str, Any] = {"selected_on": f"validation ({len(splits['validation'])}, carved from train)",
                           "teacher": {s: r.metrics["accuracy"] for s, r in ref.items()}, "variants": {}}
    irs = {}
    for name in a.variants:
        kw = VARIANTS[name]
        if kw is None:
            xml, info = nncf_int8_ir(plain, work / name, calib)
        else:
            kw = dict(kw)
            pat = kw.pop("exclude_pattern", None)
            if pat:
                import onnx

                kw["exclude"] = [n.name for n in onnx.load(str(plain)).graph.node if n.op_type == "MatMul" and re.search(pat, n.name)]
            xml, info = ours_int8_ir(plain, work / name, calib, **kw)
        irs[name] = xml
        runner = OpenVinoRunner(xml, 2, "f32")
        row: dict[str, Any] = {"method": "peer" if kw is None else "compresslab",
                               "settings": {k: v for k, v in (VARIANTS[name] or {}).items()},
                               "quantize_s": info.get("quantize_s"),
                               "size_bytes": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size}
        for s, ex in splits.items():
            sc = predict(onnx_forward(runner), task.spec, ex, tok, max_length=ml)
            row[f"{s}_acc"] = sc.metrics["accuracy"]
            row[f"{s}_agreement"] = float(np.mean(sc.predictions == ref[s].predictions))
        out["variants"][name] = row
        logging.info("%s: %s", name, row)
        results.write(out)  # partial: each variant as it is scored
    ours = {n: r for n, r in out["variants"].items() if r["method"] == "compresslab"}
    if ours:
        out["selected_ours"] = max(ours, key=lambda n: ours[n]["validation_agreement"])
    out["deploy_grid_choice"] = grid_choices(out["variants"])
    if not a.no_timing:
        runners = {"ort_fp32": OrtRunner(rd / m["export"]["fp32"]["path"], 2),
                   "openvino_f32": OpenVinoRunner(plain, 2, "f32"),
                   **{n: OpenVinoRunner(x, 2, "default") for n, x in irs.items()}}
        load0 = os.getloadavg()
        lat = measure_latency(runners, [(32, 128), (1, 128)], warmup=5, runs=a.runs, vocab_size=tok.vocab_size)
        for n in runners:
            r = out["variants"].setdefault(n, {})
            for b in (32, 1):
                r[f"b{b}_ms"] = lat["results"][n][shape_key(b, 128)]["p50_ms"]
        out["timing_load"] = {"before": load0, "after": os.getloadavg()}
        if out["deploy_grid_choice"]:  # with its timing
            out["deploy_grid_choice"] = grid_choices(out["variants"])
    out["meta"] = {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(2),
                   "run_dir": str(rd), "command": "python benchmarks/openvino_int8.py " + " ".join(argv)}
    results.write(out)


if __name__ == "__main__":
    main(sys.argv[1:])
