"""The report's "Quantization" section: what the user fixed is stated beside what the allocator chose."""

from __future__ import annotations

from compresslab.report.render import Document, to_markdown


def test_hawq_pins_are_shown_in_the_quantization_table() -> None:
    """hawq's ``rules`` pin widths that count in the budget: the report names them (``allocation.pinned``)."""
    from compresslab.report.quantization import quantization_section as _quant

    met = {"bits_per_layer": {"layer.0": [4, 4, 4, 4, 4, 8]}, "avg_bits": 4.4,
           "allocation": {"method": "ilp", "budget_avg_bits": 4.5, "pinned": {"bert.encoder.layer.0.output.dense": 8}}}
    m = {"steps": [{"index": 1, "name": "hawq", "result": {"metrics": met}}]}
    doc = Document("t", [])
    doc.blocks += _quant(m)
    md = to_markdown(doc)
    assert "| pinned by rules (counted in the budget) | bert.encoder.layer.0.output.dense: 8 |" in md
    met["allocation"]["pinned"] = {}
    doc = Document("t", [])
    doc.blocks += _quant(m)
    assert "pinned by rules" not in to_markdown(doc)
