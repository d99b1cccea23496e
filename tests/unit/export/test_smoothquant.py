"""SmoothQuant (Xiao et al. 2023, eq. 4) on an ONNX graph: exact equivalence, the alpha=0.5 balance, the scales."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from compresslab.export.smoothquant import activation_absmax, smooth_onnx, smooth_scales, weight_matmuls


def _feeds(batches: list) -> list[dict]:
    return [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in batches]


def test_scales_follow_eq4_on_known_numbers():
    s = smooth_scales(np.array([16.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0]), alpha=0.5)
    np.testing.assert_allclose(s, [4.0, 0.5, 1.0])  # sqrt(16/1), sqrt(1/4), an all-zero channel keeps 1
    np.testing.assert_allclose(smooth_scales(np.array([8.0]), np.array([2.0]), alpha=1.0), [8.0])
    np.testing.assert_allclose(smooth_scales(np.array([8.0]), np.array([2.0]), alpha=0.0), [0.5])
    with pytest.raises(ValueError, match="alpha"):
        smooth_scales(np.ones(2), np.ones(2), alpha=1.5)


def test_smoothed_graph_is_equivalent_and_balanced(exported_bert, make_batches, tmp_path):
    plain = Path(exported_bert.unfused_path)
    calib, held = _feeds(make_batches(n=3, bs=8, seed=1)), _feeds(make_batches(n=2, bs=8, seed=2))
    dst = tmp_path / "smoothed.onnx"
    info = smooth_onnx(plain, dst, calib, alpha=0.5)
    before, after = onnx.load(str(plain)), onnx.load(str(dst))
    groups = weight_matmuls(before)
    # 2 layers x (LN->QKV, context->attn out, LN->FFN in, GELU->FFN out) + pooler + classifier
    assert info["n_activations"] == len(groups) and info["n_matmuls"] == sum(map(len, groups.values()))
    assert sum(n.op_type == "Mul" and n.name.endswith("_SmoothQuant") for n in after.graph.node) == len(groups)
    a, b = ort.InferenceSession(str(plain)), ort.InferenceSession(str(dst))
    for f in held:  # exactly the same function (fp32 rounding only)
        np.testing.assert_allclose(b.run(None, f)[0], a.run(None, f)[0], rtol=1e-4, atol=1e-5)
    # alpha = 0.5: on the calibration data each smoothed channel's activation max equals its weight row max
    smoothed = {x: f"{x}_smoothed" for x in groups}
    act = activation_absmax(after, list(smoothed.values()), calib)
    inits = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    for x, nodes in weight_matmuls(after).items():
        w_max = np.max([np.abs(inits[n.input[1]]).max(axis=1) for n in nodes], axis=0)
        live = (act[x] > 1e-4) & (w_max > 1e-4)
        np.testing.assert_allclose(act[x][live], w_max[live], rtol=1e-3)
