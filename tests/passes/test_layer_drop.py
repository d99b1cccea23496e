"""layer_drop: layers really leave the ModuleList and the config; save/load/export round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from compresslab.models.adapters import get_adapter
from compresslab.checkpoint import load, save
from compresslab.models.structure import shrink_heads
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.passes.layer_drop import LayerDrop, evenly_spaced
from compresslab.testing import tiny_context, tiny_task
from compresslab.types import PassContext

torch.set_num_threads(1)


def _ctx(tmp_path: Path) -> PassContext:
    """The shared toy context (compresslab.testing), 32 train sentences."""
    ctx = tiny_context(tiny_tokenizer(tmp_path / "tok"), tmp_path, task=tiny_task(32, 4, 4))
    ctx.step_dir = tmp_path
    return ctx


def _logits(model: torch.nn.Module, ctx: PassContext) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits
                          for b in ctx.calibration_batches(16)])


def test_evenly_spaced_keeps_the_top_layer() -> None:
    assert evenly_spaced(6, 3) == [1, 3, 5]
    assert evenly_spaced(6, 1) == [5]
    assert evenly_spaced(12, 4) == [2, 5, 8, 11]
    assert evenly_spaced(6, 6) == list(range(6))


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_drop_save_load_export(arch: str, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    layers = {"n_layers": 3} if arch == "distilbert" else {"num_hidden_layers": 3}
    model = tiny_model(arch, **layers)
    top = get_adapter(model).layer(2).layer
    res = LayerDrop(keep=[0, 2]).apply(model, ctx)
    assert res.structure == {"layers": [0, 2]} and res.metrics["params"] < res.metrics["params_before"]
    adapter = get_adapter(model)
    assert adapter.num_layers == 2 and adapter.layer(1).layer is top
    assert (model.config.n_layers if arch == "distilbert" else model.config.num_hidden_layers) == 2
    out = save(model, tmp_path / "saved", ctx.tokenizer)
    torch.testing.assert_close(_logits(load(out), ctx), _logits(model, ctx), atol=1e-5, rtol=0)
    if arch == "bert":  # uniform shapes: plain transformers loads it too
        from transformers import AutoModelForSequenceClassification

        plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
        torch.testing.assert_close(_logits(plain, ctx), _logits(model, ctx), atol=1e-5, rtol=0)
        from compresslab.export import export_model

        exp = export_model(model, ctx.tokenizer, tmp_path / "onnx", list(ctx.calibration_batches(8)), threads=1)
        assert exp.fused_attention_nodes == 2


def test_drop_after_head_pruning_round_trips(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    model = tiny_model("bert", num_hidden_layers=3)
    shrink_heads(get_adapter(model).layer(2), [0, 3])
    LayerDrop(num_layers=2).apply(model, ctx)  # keeps layers [0, 2]: the shrunk one survives
    assert get_adapter(model).structure() == [{"heads": 4, "ffn": 64}, {"heads": 2, "ffn": 64}]
    out = save(model, tmp_path / "saved")
    torch.testing.assert_close(_logits(load(out), ctx), _logits(model, ctx), atol=1e-5, rtol=0)


def test_recovery_uses_the_one_training_loop(tmp_path: Path) -> None:
    res = LayerDrop(num_layers=1, recovery={"steps": 2, "hidden_weight": 1.0}).apply(tiny_model("bert"), _ctx(tmp_path))
    assert res.metrics["recovery"]["steps"] == 2


@pytest.mark.parametrize("kw,msg", [({}, "exactly one"), ({"keep": [0], "num_layers": 1}, "exactly one"),
                                    ({"keep": []}, "non-empty"), ({"keep": [1, 0]}, "ascending"),
                                    ({"keep": [0, 0]}, "unique"), ({"num_layers": 0}, ">= 1")])
def test_bad_settings(kw: dict[str, Any], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        LayerDrop(**kw)


def test_out_of_range_for_the_model(tmp_path: Path) -> None:
    """Refusals name the values that work on this depth (the trial set num_layers=4 on a 2-layer DistilBERT)."""
    with pytest.raises(ValueError, match=r"has 2 layers \(indices 0..1\); keep a proper subset of the indices "
                                         r"0..1, e.g. keep=\[1\]"):
        LayerDrop(keep=[0, 2]).apply(tiny_model("bert"), _ctx(tmp_path))
    with pytest.raises(ValueError, match=r"only 2 layers; set num_layers between 1 and 1 \(num_layers=2 keeps every"):
        LayerDrop(num_layers=3).apply(tiny_model("bert"), _ctx(tmp_path))
    with pytest.raises(ValueError, match=r"num_layers=4 but the model has only 2 layers; set num_layers between 1 and 1"):
        LayerDrop(num_layers=4).check_model(tiny_model("distilbert"))
    deep = tiny_model("bert", num_hidden_layers=6)
    with pytest.raises(ValueError, match=r"only 6 layers; set num_layers between 1 and 5"):
        LayerDrop(num_layers=8).check_model(deep)
    with pytest.raises(ValueError, match=r"1 layer \(indices 0..0\); a 1-layer model has no layer to drop: remove the "
                                         r"layer_drop step"):
        LayerDrop(keep=[0, 1]).check_model(tiny_model("bert", num_hidden_layers=1))
