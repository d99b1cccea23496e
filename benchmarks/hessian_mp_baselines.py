"""``python benchmarks/hessian_mp.py baselines``: the weight-only peers (ORT MatMulNBitsQuantizer RTN 4-bit,
NNCF compress_weights 4/8 on OpenVINO) on the bench teacher, stored under ``baselines`` of
benchmarks/results/hessian_mp.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from _hessian_mp_core import BLOCK, work_dir, _dev_batches, _has, _onnx_scored, _store, _teacher, _teacher_preds  # sibling


def baselines(args) -> None:
    """ORT's own MatMulNBitsQuantizer (RTN) at 4 bits, and NNCF compress_weights 4/8 on OpenVINO."""
    from compresslab.data.metrics import agreement
    from compresslab.export.onnx import export_model
    from compresslab.failure import error_text

    _, teacher, _ = _teacher()
    teacher_preds = _teacher_preds()
    out = work_dir() / "baselines"
    plain = work_dir() / "deploy" / "teacher" / "model_unfused.onnx"
    if not plain.is_file():
        export_model(teacher.model, teacher.tokenizer, work_dir() / "deploy" / "teacher", _dev_batches(32, 16))
    if not _has("baselines.ort_rtn_4"):
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: benchmarks.peers
        from benchmarks.peers.ort_nbits import rtn_nbits  # the one copy of the peer's call (the suite's too)

        dst = rtn_nbits(plain, out / "ort_rtn_4" / "model.onnx", bits=4, block_size=BLOCK, symmetric=False)
        s = _onnx_scored(dst)
        _store("baselines.ort_rtn_4", s.metrics["score"])
        _store("baselines_detail.ort_rtn_4", {"agreement": agreement(s.predictions, teacher_preds),
                                              "block_size": BLOCK, "symmetric": False, "algo": "RTN",
                                              "file_bytes": dst.stat().st_size,
                                              "note": "MatMulNBitsQuantizer also quantizes the classifier/pooler "
                                                      "MatMuls it finds; PTQ, no data"})
    if not _has("baselines.nncf_4_8"):
        try:
            rec = _nncf_4_8(plain, out / "nncf_4_8", teacher_preds)
            _store("baselines.nncf_4_8", rec["acc"])
            _store("baselines_detail.nncf_4_8", rec)
        except Exception as e:  # a peer that fails gets its exact error, not silence
            _store("baselines.nncf_4_8", None)
            _store("baselines_detail.nncf_4_8", {"error": error_text(e)})


def _nncf_4_8(plain: Path, out: Path, teacher_preds: np.ndarray) -> dict[str, Any]:
    """NNCF compress_weights, INT4_ASYM group 64 with the rest INT8_ASYM, its Hessian-input-activation
    sensitivity on 128 train examples, ratio 0.8 (NNCF's documented starting point), on OpenVINO."""
    import nncf
    import openvino as ov

    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.data.metrics import agreement
    from compresslab.eval.evaluate import onnx_forward, predict

    cfg, teacher, ctx = _teacher()
    core = ov.Core()
    model = core.read_model(str(plain))
    names = [i.get_any_name() for i in model.inputs]
    feeds = [{k: v.numpy() for k, v in b.items() if k in names} for b in ctx.calibration_batches(128, batch_size=1)]
    t0 = time.perf_counter()
    cm = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, ratio=0.8, group_size=BLOCK,
                               dataset=nncf.Dataset(feeds),
                               sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION)
    wall = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(cm, str(out / "openvino_model.xml"))
    runner = OpenVinoRunner(out / "openvino_model.xml", 2, "f32")
    s = predict(onnx_forward(runner), teacher.task.spec, teacher.task.dev, teacher.tokenizer,
                max_length=int(cfg.task.max_length))
    return {"acc": s.metrics["score"], "agreement": agreement(s.predictions, teacher_preds), "ratio": 0.8,
            "group_size": BLOCK, "mode": "INT4_ASYM + INT8_ASYM", "sensitivity": "HESSIAN_INPUT_ACTIVATION",
            "calibration_examples": 128, "compress_s": round(wall, 1), "nncf": nncf.__version__,
            "openvino": ov.__version__}
