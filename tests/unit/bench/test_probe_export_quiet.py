"""A latency-table probe with no attention (heads=0 by design) leaves ``attention_mask`` unread: that is logged at
debug level, not as the INFO line meant for a user's model whose attention was all pruned (a ZipLM table logged
~61 such lines before anything was pruned: new-user trial, session 40)."""

from __future__ import annotations

import logging

import torch

from compresslab.export.onnx import export_onnx, input_names_for
from compresslab.models.structure import apply_structure
from compresslab.models.tiny import tiny_model


def _no_attention(tmp_path, probe: bool, caplog) -> list[str]:
    model = tiny_model("bert", seed=0).eval()
    apply_structure(model, [{"heads": 0, "ffn": 16}] * 2)
    ids = torch.randint(0, 64, (2, 8))
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="compresslab.export.onnx"):
        export_onnx(model, tmp_path / f"m{int(probe)}.onnx", sample, input_names_for(model), probe=probe)
    return [r.levelname for r in caplog.records if "graph reads none of" in r.getMessage()]


def test_a_probe_logs_unread_inputs_at_debug_and_a_model_at_info(tmp_path, caplog) -> None:
    assert _no_attention(tmp_path, True, caplog) == ["DEBUG"]
    assert _no_attention(tmp_path, False, caplog) == ["INFO"]
