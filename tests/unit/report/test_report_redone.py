"""The report shows the manifest's ``redone`` list: one line per event a resume recorded (when, the step or stage
redone with what read it, each file and why), in report.md and report.html alike; nothing when the list is empty."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from compresslab.report import build_report, plots

FIXTURE = Path(__file__).with_name("manifest_full.json")
STEP_EVENT = {"at": "2026-12-07T05:39:23+00:00", "step": "obert", "index": 1, "steps": ["obert", "int8"],
              "problems": ["steps/01_obert/model.safetensors changed after the step finished (edited, truncated or "
                           "replaced: sha256 0123456789ab recorded, ba9876543210 now, 1000 bytes)"]}
STAGE_EVENT = {"at": "2026-12-08T10:00:00+00:00", "stage": "deploy", "stages": ["deploy", "eval", "sizes", "keep"],
               "problems": ["export/openvino/openvino_model.bin is missing",
                            "export/openvino/openvino_model.xml is unreadable (Permission denied)"]}
LINES = [
    "2026-12-07T05:39:23+00:00: step obert redone with the later steps int8, and the stages after the steps: "
    "steps/01_obert/model.safetensors changed after the step finished (edited, truncated or replaced: sha256 "
    "0123456789ab recorded, ba9876543210 now, 1000 bytes)",
    "2026-12-08T10:00:00+00:00: the deploy stage redone with the stages after it eval, sizes, keep: "
    "export/openvino/openvino_model.bin is missing; export/openvino/openvino_model.xml is unreadable "
    "(Permission denied)"]


def _report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redone: list[dict[str, Any]] | None) -> tuple[str, str]:
    monkeypatch.setattr(plots, "PLOTS", {})  # the text only
    m = copy.deepcopy(json.loads(FIXTURE.read_text()))
    if redone is not None:
        m["redone"] = redone
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    build_report(tmp_path)
    return (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()


def test_each_redone_event_is_one_line_of_the_report(tmp_path, monkeypatch):
    md, html = _report(tmp_path, monkeypatch, [STEP_EVENT, STAGE_EVENT])
    section = md.split("## Redone on resume", 1)[1].split("\n## ", 1)[0]
    assert [line[2:] for line in section.splitlines() if line.startswith("- ")] == LINES
    assert "<h2>Redone on resume</h2>" in html
    for line in LINES:
        assert f"<li>{line}</li>" in html


@pytest.mark.parametrize("redone", [None, []], ids=["no list", "empty list"])
def test_no_redone_section_without_events(tmp_path, monkeypatch, redone):
    md, html = _report(tmp_path, monkeypatch, redone)
    assert "Redone on resume" not in md and "Redone on resume" not in html
