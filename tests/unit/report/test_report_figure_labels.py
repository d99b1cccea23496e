"""A figure says what it measures (new-user trial, session 45, F11).

* The machine-load line printed the OS's 1/5/15-minute load averages as "1-minute load average 1.99, 0.75, 0.29".
* A 4-bit hawq step showed 91.7 MB in the Steps table and the size plot, bigger than the 90.9 MB teacher: the file
  is the step's fp32 fake-quant model.safetensors; its packed 4-bit file (54.1 MB) was only in a later table.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from compresslab.report.plots import size_bars
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.report.speed import loadavg_text

RUNS = Path(__file__).with_name("runs")


def _run(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((RUNS / f"{name}.json").read_text()))


def _md(m: dict[str, Any]) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/x"))


def test_the_load_average_triple_is_named_as_1_5_and_15_minutes() -> None:
    m = _run("magnitude_int8_busy")
    m["bench"]["machine_load"]["during"]["loadavg"] = [1.99, 0.75, 0.29]
    md = _md(m)
    assert "load average over 1, 5 and 15 minutes 1.99, 0.75, 0.29" in md and "1-minute load average 1.99" not in md


@pytest.mark.parametrize("value, text", [(2.5, "1-minute load average 2.5"), (None, "load average —")])
def test_a_single_or_missing_load_figure_reads_as_what_it_is(value: Any, text: str) -> None:
    assert loadavg_text(value) == text


def _hawq(m: dict[str, Any]) -> dict[str, Any]:
    """The recorded magnitude run with its torch step made a 4-bit hawq step, its sizes the trial's hawq_w4's."""
    step = m["steps"][1]
    step["name"] = "hawq"
    step["pass"] = {**step.get("pass", {}), "name": "hawq"}
    step["metrics_after"]["size_bytes"] = 91_706_368
    step["result"]["formats"] = ["packed_nbits"]
    step["result"]["metrics"]["size"] = {"fp32": {"encoder": 42_587_136, "total": 90_867_920},
                                         "packed_nbits": {"encoder": 5_842_944, "total": 54_141_832}}
    m["steps"][0]["metrics_after"]["size_bytes"] = 90_867_952
    return m


def test_a_quantizing_steps_size_says_it_is_the_fp32_fake_quant_file_with_the_packed_size_beside() -> None:
    m = _hawq(_run("magnitude_int8_busy"))
    md = _md(m)
    row = next(line for line in md.splitlines() if line.startswith("| 01 hawq"))
    assert "| 91.7 (fp32 fake-quant; packed_nbits 54.1) |" in row
    assert "| 90.9 |" in next(line for line in md.splitlines() if line.startswith("| 00 finetune"))
    bars = {label: round(mb, 1) for label, mb, _ in size_bars(m)}
    assert bars["01 hawq (fp32 fake-quant)"] == 91.7 and bars["01 hawq packed_nbits"] == 54.1
    assert "01 hawq" not in bars  # no bare step label on the fp32 fake-quant bytes


def test_a_pruning_steps_size_names_its_fp32_file_and_its_sparse_format() -> None:
    md = _md(_run("magnitude_int8_busy"))
    row = next(line for line in md.splitlines() if line.startswith("| 01 magnitude"))
    assert "(fp32; sparse_int8 0.039)" in row
