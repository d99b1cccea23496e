"""The report's "Speedup targets" section states the runtime a speedup was priced on (and the dense timings that
chose it from a list), predicted vs measured, and a latency table that was cached, busy or noisy when measured."""

from __future__ import annotations

from typing import Any

from compresslab.report.render import Document, to_markdown
from compresslab.report.targets import speedup_targets


def _manifest(**lt: Any) -> dict[str, Any]:
    metrics = {"target_speedup": 2.5, "predicted_speedup": 2.503, "measured_speedup_b32": 2.63, "met_target": True,
               "retries": 0, "busy_checks": 0,
               "latency_table": {"model": "linear", "runtime": "ort_int8", "cached": True, "measure_s": 178.2,
                                 "machine_load": {"busy": False, "spread": {"noisy": False, "max": 0.1}}, **lt},
               "family": {"2.5x": {"target_speedup": 2.5}, "4.0x": {"target_speedup": 4.0, "predicted_speedup": 4.0,
                                                                  "measured_speedup_b32": 3.5}}}
    return {"steps": [{"index": 0, "name": "finetune", "result": {"metrics": {}}},
                      {"index": 1, "name": "ziplm", "result": {"metrics": metrics}}]}


def _md(m: dict[str, Any]) -> str:
    doc = Document("t", [])
    doc.blocks += speedup_targets(m)
    return to_markdown(doc)


def test_the_runtime_prediction_and_measurement_are_stated() -> None:
    md = _md(_manifest())
    assert "## Speedup targets" in md and "| target (b32, on the runtime below) | 2.500x |" in md
    assert "| latency runtime | ort_int8 |" in md and "2.503x / 2.630x (met; retries 0)" in md
    assert "cached (measured earlier in" in md and "noisy" not in md and "BUSY" not in md
    assert "family member 4.0x: predicted / measured | 4.000x / 3.500x" in md and "member 2.5x" not in md


def test_a_runtime_list_shows_the_dense_timings_and_whether_the_first_was_kept() -> None:
    fastest = _md(_manifest(runtime_choice={"chosen": "ort_int8", "b32xs128_ms": {"ort_int8": 409.5,
                                                                                   "openvino_int8": 678.6}}))
    assert "ort_int8 (fastest for the dense model at b32xs128: ort_int8 409.5 ms, openvino_int8 678.6 ms)" in fastest
    kept = _md(_manifest(runtime_choice={"chosen": "ort_int8", "busy": True,
                                         "b32xs128_ms": {"ort_int8": 100.0, "openvino_int8": 97.0}}))
    assert "kept: listed first, openvino_int8 within the margin" in kept and "BUSY machine" in kept


def test_a_noisy_busy_or_fresh_table_says_so() -> None:
    md = _md(_manifest(cached=False, machine_load={"busy": True, "reasons": ["other processes used 1.2 CPU"],
                                                   "spread": {"noisy": True, "max": 0.29, "runner": "ffn_896",
                                                              "shape": "b32xs128"}}))
    assert "measured in this run" in md and "BUSY when measured: other processes used 1.2 CPU" in md
    assert "flagged noisy when measured (ffn_896 at b32xs128: 29% median to p90)" in md


def test_no_target_no_section() -> None:
    assert speedup_targets({"steps": [{"index": 0, "name": "int8", "result": {"metrics": {"x": 1}}}]}) == []
    assert speedup_targets({}) == []


def test_a_target_checked_at_another_batch_shows_its_measurement_and_shape() -> None:
    """ZipLM timed at ``batch=4 seq=32`` wrote ``measured_speedup_b4``: the report read only the b32 key, printed
    "—" as the measurement beside "met", and called the shape b32 (a new user's trial, session 40)."""
    m = _manifest()
    met = m["steps"][1]["result"]["metrics"]
    del met["measured_speedup_b32"]
    met.update({"measured_speedup": 2.0009, "measured_speedup_b4": 2.0009, "shape": [4, 32]})
    met["family"]["4.0x"] = {"target_speedup": 4.0, "predicted_speedup": 4.0, "measured_speedup": 3.9,
                             "shape": [4, 32]}
    md = _md(m)
    assert "| target (b4xs32, on the runtime below) | 2.500x |" in md
    assert "2.503x / 2.001x (met; retries 0)" in md and "4.000x / 3.900x" in md


def test_an_older_manifest_timed_at_batch_4_shows_its_measurement() -> None:
    """Manifests written before ``measured_speedup`` hold only ``measured_speedup_b4``: read it, label b4."""
    m = _manifest()
    met = m["steps"][1]["result"]["metrics"]
    met["measured_speedup_b4"] = met.pop("measured_speedup_b32")
    md = _md(m)
    assert "| target (b4, on the runtime below) | 2.500x |" in md and "2.503x / 2.630x (met" in md
