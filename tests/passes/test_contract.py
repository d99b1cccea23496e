"""Every registered pass: build from its YAML, JSON round trip, apply on a tiny model, save,
reload, export, parity. Adding a pass without a YAML (or vice versa) fails here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from compresslab.config import config_dir
from compresslab.checkpoint import check_formats, load, save
from compresslab.models.tiny import tiny_model
from compresslab.registry import available_passes, pass_from_dict, pass_to_dict
from compresslab.training import Recovery
from compresslab.types import OnnxModel, Pass, PassResult, Stage

CONF = Path(config_dir())

# Settings that make each pass fit a 2-layer, hidden-32 model and a 96-example toy task.
TINY: dict[str, dict] = {
    "finetune": {"preset": "smoke", "cache": False},
    "obert": {"num_grads": 8, "grad_batch_size": 4, "block_size": 8, "recovery": {"steps": 4}, "sparsity": 0.5},
    "magnitude": {"recovery": {"steps": 4}, "sparsity": 0.5},
    # a hidden-32 model has no measurable speedup headroom on ORT: 1.0 exercises the whole path
    "ziplm": {"num_calibration": 32, "speedup": 1.0, "family": [], "batch": 2, "seq": 16, "recovery": {"steps": 2},
              "latency_runs": 3},
    "structured_l1": {"speedup": 1.0, "batch": 2, "seq": 16, "recovery": {"steps": 2}, "latency_runs": 3},
    "layer_drop": {"num_layers": 1, "keep": None},
    "ort_int8_static": {"num_calibration": 16},
    "int8_qat": {"num_calibration": 16},
    "hawq": {"block_size": 16, "hessian": {"batches": 2, "batch_size": 8, "min_probes": 4, "eigen_batches": 1,
                                           "eigen_iters": 5}},
}


def pass_yaml(name: str):
    budget = OmegaConf.load(CONF / "budget" / "smoke.yaml")
    node = OmegaConf.merge({"budget": budget}, {"p": OmegaConf.load(CONF / "pass" / f"{name}.yaml")})
    node.p = OmegaConf.merge(node.p, {k: v for k, v in TINY.get(name, {}).items()
                                      if k in node.p or k in _fields(name)})
    return node.p


def _fields(name: str) -> set[str]:
    import dataclasses

    from compresslab.registry import get_pass

    return {f.name for f in dataclasses.fields(get_pass(name))}


def test_registry_matches_conf_pass_one_to_one():
    yamls = {p.stem for p in (CONF / "pass").glob("*.yaml")}
    assert yamls == set(available_passes())


@pytest.mark.parametrize("name", available_passes())
def test_build_from_yaml_and_json_round_trip(name):
    p = instantiate(pass_yaml(name), _convert_="all")
    assert p.name == name and isinstance(p.stage, Stage)
    d = pass_to_dict(p)
    again = pass_from_dict(json.loads(json.dumps(d)))
    assert pass_to_dict(again) == d and again == p
    if hasattr(p, "recovery"):  # the nested block: a Recovery after YAML, a dict in JSON, a Recovery again
        assert isinstance(p.recovery, Recovery) and isinstance(d["recovery"], dict)
        assert again.recovery == p.recovery


@pytest.mark.parametrize("name", available_passes())
def test_every_pass_meets_the_protocol(name, tiny_ctx):
    from compresslab.registry import get_pass

    cls = get_pass(name)
    assert isinstance(getattr(cls, "makes_teacher", None), bool), f"{name} must declare makes_teacher"
    assert callable(getattr(cls, "check", None)), f"{name} must define check(task)"
    p = instantiate(pass_yaml(name), _convert_="all")
    assert isinstance(p, Pass)
    assert p.makes_teacher is (name == "finetune")  # only finetune produces the run's teacher
    assert p.check(tiny_ctx().task) is None  # the toy task passes every pass's data checks


def _inputs(tok):
    enc = tok(["the movie was good", "boring plot and bad actors !"], padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@pytest.mark.parametrize("name", available_passes())
def test_apply_save_reload_export(name, tiny_tok, tiny_ctx, tmp_path):
    from compresslab.export.onnx import export_model

    p = instantiate(pass_yaml(name), _convert_="all")
    model = tiny_model("bert", seed=0)
    ctx = tiny_ctx(teacher=copy.deepcopy(model).eval())
    batches = [_inputs(tiny_tok)]
    if p.stage == Stage.ONNX:
        if name == "ort_matmul_nbits":
            # an n-bit ONNX pass needs an n-bit model: one frozen 4-bit Linear, exported with its sidecar
            from compresslab.export.matmul_nbits import export_quantized
            from compresslab.models.quantized import freeze_all, quantize_modules

            quantize_modules(model, {"bert.encoder.layer.0.intermediate.dense": {"bits": 4, "block_size": 16}})
            freeze_all(model)
            exp = export_quantized(model, tiny_tok, tmp_path / "export", batches)
        else:
            exp = export_model(model, tiny_tok, tmp_path / "export", batches)
        res = p.apply(OnnxModel(exp.dir, exp.onnx_path), ctx)
        assert isinstance(res, PassResult) and res.onnx_path and Path(res.onnx_path).is_file()
        from compresslab.eval.onnx_runner import OnnxRunner

        out = OnnxRunner(res.onnx_path, threads=1).run({k: v.numpy() for k, v in batches[0].items()})
        assert out.shape == (2, 2)
        return
    res = p.apply(model, ctx)
    assert isinstance(res, PassResult)
    assert check_formats(res.formats, name) == res.formats  # only formats the checkpoint can write
    json.dumps(res.to_dict())  # plain JSON-able values only
    model.eval()
    ref = model(**batches[0]).logits
    save(model, tmp_path / "ck", tiny_tok)
    again = load(tmp_path / "ck")
    torch.testing.assert_close(again(**batches[0]).logits, ref, atol=1e-5, rtol=1e-4)
    exp = export_model(again, tiny_tok, tmp_path / "export", batches)
    assert exp.parity["max_abs_diff"] <= exp.parity["atol"]


def test_every_registered_pass_is_an_attribute_of_compresslab_passes() -> None:
    """``compresslab.passes.<Class>`` (lazy, ``passes/__init__.py``'s ``_CLASSES``) lists exactly the registered
    classes: a new pass left out of it was unreachable that way, and no test failed."""
    import compresslab.passes as passes_pkg
    from compresslab.registry import available_passes, get_pass

    registered = {get_pass(n).__name__: n for n in available_passes()}
    assert dict(passes_pkg._CLASSES) == registered
    assert sorted(passes_pkg.__all__) == sorted(registered)
    for cls_name, name in registered.items():
        assert getattr(passes_pkg, cls_name) is get_pass(name)
