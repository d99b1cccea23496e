"""`+pipeline=int8 deploy=openvino` end to end on the real embedded MiniLM (debug=smoke, bench off):
the deployed artifact is the OpenVINO IR and eval scored it; then `deploy=auto` records its decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.manifest import read_json
from compresslab.pipeline import run

pytestmark = [pytest.mark.integration, pytest.mark.e2e]  # two real-model runs: with the e2e runs


def _cfg(tmp_path: Path, data_root: Path, *extra: str, bench: str = "off"):
    return compose(["+pipeline=int8", "debug=smoke", f"bench={bench}", f"data.root={data_root}", "run.threads=1",
                    f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache", *extra])


def test_int8_deployed_on_openvino_then_auto(tmp_path, data_root):
    pytest.importorskip("openvino")
    import openvino as ov

    rd = run(_cfg(tmp_path, data_root, "deploy=openvino", "bench.backends=[ort]", bench="default"))
    m = read_json(rd / "manifest.json")
    assert m["status"] == "finished"
    dep = m["export"]["deployed"]
    ir = m["export"]["openvino"]
    # deploy.int8=auto: ORT's dynamic int8 (MatMulInteger) is unreadable there, so our static QDQ calibration
    # and NNCF's PTQ each made an int8 IR from the plain fp32 export; the higher validation agreement won
    assert ir["int8"] and ir["source"] == "export/model_unfused.onnx" and "error" not in ir
    assert set(ir["candidates"]) == {"ours", "nncf"} and ir["int8_method"] in ("ours", "nncf")
    assert ir["candidates"]["ours"]["method"] == "compresslab" and ir["candidates"]["nncf"]["method"] == "peer"
    choice = ir["int8_choice"]
    assert choice["split"] == "validation" and set(choice["validation"]) == {"ours", "nncf"}
    assert ir["int8_method"] == max(("ours", "nncf"), key=lambda k: (choice["validation"][k]["agreement"], k == "ours"))
    assert any("steps/01_int8/model.onnx" in n and "MatMulInteger" in n for n in ir["candidates"]["ours"]["notes"])
    # our recipe built one IR per SmoothQuant strength of deploy.smooth_alpha and kept the best on validation
    sc = ir["candidates"]["ours"]["quantization"]["smooth_choice"]
    assert sc["scored"] and sc["grid"] == [0.5, 0.7, 0.8, 0.9, 0.95] and sc["alpha"] in sc["grid"]
    assert sc["scores"][f"alpha_{sc['alpha']:g}"] == max(sc["scores"].values())
    assert not list((rd / "export").glob(".*smooth_grid"))  # the other builds are gone
    ir_dir = {"ours": "openvino", "nncf": "openvino_nncf"}[ir["int8_method"]]
    assert (dep["path"], dep["runtime"]) == (f"export/{ir_dir}/openvino_model.xml", "openvino")
    assert dep["method"] == ir["method"] and dep["label"].endswith("int8")
    for d in ("openvino", "openvino_nncf"):
        for f in ("openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"):
            assert (rd / "export" / d / f).is_file(), (d, f)
        assert 'type="FakeQuantize"' in (rd / "export" / d / "openvino_model.xml").read_text()
    ov.Core().read_model(str(rd / dep["path"]))
    ev = m["eval"]
    assert ev["deployed_path"] == dep["path"] and ev["deployed_runtime"] == "openvino"
    assert {"deployed", "deployed_onnx_ort", "ort_fp32"} <= set(ev["models"])
    assert ev["models"]["deployed"]["agreement"] >= 0.85  # the int8 IR (smoke budget: an untrained head)
    b = m["bench"]  # speed from the same artifact that was scored
    assert b["files"]["deployed"] == dep["path"] and b["files"]["deployed_onnx_ort"] == "steps/01_int8/model.onnx"
    assert b["speedups"]["deployed"]
    # the size of what ships: the IR's bytes, with the ONNX file it came from beside it
    ir_bytes = sum((rd / dep["path"]).with_suffix(x).stat().st_size for x in (".xml", ".bin"))
    assert m["size"]["deployed"] == {"total": ir_bytes, "runtime": "openvino", "file": dep["path"],
                                     "source": ir["source"]}  # the IR was made from the plain export (trial F3)
    assert m["size"]["deployed_onnx"]["total"] == (rd / "steps/01_int8/model.onnx").stat().st_size

    rd2 = run(_cfg(tmp_path, data_root, "deploy=auto"))
    m2 = read_json(rd2 / "manifest.json")
    auto = m2["deploy"]["auto"]
    assert auto["chosen"] in ("ort", "openvino") and auto["chosen"] == m2["export"]["deployed"]["runtime"]
    assert set(auto["p50_ms"]) == {"ort", "openvino"} and set(auto["validation"]) == {"ort", "openvino"}
    assert auto["split"] == "validation" and auto["n"] > 0 and "ort" in auto["eligible"]
    dep2 = m2["export"]["deployed"]
    assert m2["size"]["deployed"]["total"] == dep2["size_bytes"]  # whichever runtime auto chose
    assert ("deployed_onnx" in m2["size"]) == (dep2["runtime"] == "openvino")
