"""benchmarks/suite_report: the bridge figures of peers timed in their own venv survive a rewrite of the results
file without timing (the timings are kept from the earlier phase, so must be what makes them comparable)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
R = importlib.import_module("benchmarks.suite_report")

EXT = {"inc_ptq_dynamic_int8": {"reference": {"dense_torch_fp32": {"latency_ms_b32": 656.9, "latency_ms_b1": 24.9}}},
       "torchao_int8_dynamic": {"error": "worker failed: boom"}}


def _text(blocks: list) -> str:
    return " ".join(str(getattr(b, "text", "")) + " ".join(getattr(b, "items", []) or []) for b in blocks)


def test_a_timed_file_shows_each_external_peers_dense_bridge_and_errors() -> None:
    text = _text(R.external_blocks({"timing": {"status": "timed", "external": EXT}}))
    assert "inc_ptq_dynamic_int8: timed in its own venv" in text and "b32 657" in text
    assert "torchao_int8_dynamic: worker failed: boom" in text


def test_a_file_rewritten_without_timing_keeps_the_earlier_phases_bridge() -> None:
    meta = {"timing": {"status": "skipped (--no-timing)", "earlier_phase": {"status": "timed", "external": EXT}}}
    assert _text(R.external_blocks(meta)) == _text(R.external_blocks({"timing": {"external": EXT}}))
    assert R.external_blocks({"timing": {"status": "skipped (--no-timing)"}}) == []
