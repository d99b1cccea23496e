"""Rebuild the models of ``benchmarks/gpu_models/*.json`` with random weights, for latency only.

Pure torch + transformers + stdlib: the GPU image has no Hydra, ONNX Runtime, OpenVINO or the MiniLM
package, so nothing here imports compresslab. A spec is ``{"name", "source", "config"}`` where
``config`` is a ``config.json`` as compresslab saves it; a shrunk model carries
``config["compresslab_structure"] = [{"heads": h, "ffn": f}, ...]`` per layer (written by
``compresslab.models.structure.stamp_structure``). The shapes below mirror
``compresslab.models.structure.apply_structure`` for BERT (tests check parameter-for-parameter
parity with it): Q/K/V get ``heads * head_size`` output rows, the attention output ``heads *
head_size`` input columns, the FFN ``ffn`` neurons. Weights are random (seeded): latency depends on
shapes only.

Errors: :class:`SpecError` for a spec that cannot be built, raised before any model is made.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

STRUCTURE_KEY = "compresslab_structure"  # same key as compresslab.models.structure.STRUCTURE_KEY
SPEC_DIR = Path(__file__).resolve().parent / "gpu_models"
_REQUIRED = ("model_type", "hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers",
             "vocab_size")


class SpecError(ValueError):
    """A model spec that this script cannot build; the message says which key and why."""


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check one spec file; returns ``{"name", "source", "config"}``.

    Raises SpecError on a missing key, a non-BERT model or a structure that does not fit the config.
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SpecError(f"{path}: cannot read a JSON model spec ({e})") from e
    for key in ("name", "config"):
        if key not in spec:
            raise SpecError(f"{path}: spec has no {key!r} key (expected name, source, config)")
    check_config(spec["config"], where=str(path))
    return spec


def check_config(cfg: dict[str, Any], where: str = "config") -> None:
    """Raise SpecError unless ``cfg`` is a BERT config whose structure stamp (if any) fits it."""
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise SpecError(f"{where}: config lacks {missing}")
    if cfg["model_type"] != "bert":
        raise SpecError(f"{where}: model_type {cfg['model_type']!r} is not supported here (only 'bert')")
    heads, ffn, layers = cfg["num_attention_heads"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    if cfg["hidden_size"] % heads:
        raise SpecError(f"{where}: hidden_size {cfg['hidden_size']} is not a multiple of {heads} heads")
    structure = cfg.get(STRUCTURE_KEY)
    if structure is None:
        return
    if not isinstance(structure, list) or len(structure) != layers:
        raise SpecError(f"{where}: {STRUCTURE_KEY} must list {layers} layers, got {structure!r:.80}")
    for i, s in enumerate(structure):
        if not isinstance(s, dict) or set(s) != {"heads", "ffn"}:
            raise SpecError(f"{where}: layer {i} of {STRUCTURE_KEY} must be {{'heads', 'ffn'}}, got {s!r}")
        # a layer with no heads or no neurons left needs compresslab's Empty* modules; none of the
        # committed specs has one, so refuse rather than time a different graph
        if not 1 <= s["heads"] <= heads or not 1 <= s["ffn"] <= ffn:
            raise SpecError(f"{where}: layer {i} keeps heads={s['heads']} (1..{heads}) and ffn={s['ffn']} "
                            f"(1..{ffn}); emptied sub-blocks are not supported by this script")


def structure_of(cfg: dict[str, Any]) -> list[dict[str, int]]:
    """Per-layer heads and FFN width the built model will have (uniform when unstamped)."""
    return cfg.get(STRUCTURE_KEY) or [{"heads": cfg["num_attention_heads"], "ffn": cfg["intermediate_size"]}
                                      for _ in range(cfg["num_hidden_layers"])]


def build_model(cfg: dict[str, Any], seed: int = 0) -> nn.Module:
    """A BertForSequenceClassification in eval mode, fp32, on CPU, with ``cfg``'s per-layer shapes.

    Weights are seeded random; ``cfg`` is not modified. Raises SpecError on a bad config.
    """
    from transformers import BertConfig, BertForSequenceClassification  # lazy: tests check imports

    check_config(cfg)
    plain = {k: v for k, v in cfg.items() if k not in (STRUCTURE_KEY, "architectures")}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**plain))
    head_size = cfg["hidden_size"] // cfg["num_attention_heads"]
    for layer, s in zip(model.bert.encoder.layer, structure_of(cfg)):
        _shrink_layer(layer, s["heads"], s["ffn"], head_size)
    return model.eval()


def _shrink_layer(layer: nn.Module, heads: int, ffn: int, head_size: int) -> None:
    """Give one BertLayer ``heads`` heads and ``ffn`` FFN neurons (new random Linears), in place."""
    att, hidden = layer.attention.self, layer.attention.output.dense.out_features
    width = heads * head_size
    if att.query.out_features != width:
        for role in ("query", "key", "value"):
            setattr(att, role, nn.Linear(hidden, width))
        layer.attention.output.dense = nn.Linear(width, hidden)
        # BERT's attention reshapes by head size (view(..., -1, head_size)); these attributes are
        # kept honest for code that reads them, as compresslab's shrink_heads does
        att.num_attention_heads, att.all_head_size = heads, width
    if layer.intermediate.dense.out_features != ffn:
        layer.intermediate.dense = nn.Linear(hidden, ffn)
        layer.output.dense = nn.Linear(ffn, hidden)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Int8DynamicLinear(nn.Module):
    """``y = (q(x) @ q(W)^T) * s_x * s_w + b`` on ``torch._int_mm`` (int8 x int8 -> int32).

    Activations: symmetric int8 per token (row), scale from the row's max |x| at each call
    (dynamic, as ORT's and torch.ao's dynamic int8 do). Weights: symmetric int8 per output
    channel. This is the int8 GEMM torch itself runs on CUDA (cuBLASLt); ``torch.ao`` dynamic int8
    has CPU kernels only. Needs more than 16 rows and in/out features that are multiples of 8.
    """

    def __init__(self, lin: nn.Linear):
        super().__init__()
        if lin.in_features % 8 or lin.out_features % 8:
            raise ValueError(f"torch._int_mm needs features divisible by 8, got {lin.in_features}->{lin.out_features}")
        w = lin.weight.detach().float()  # (out, in)
        s_w = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        self.register_buffer("w_q", torch.round(w / s_w[:, None]).clamp(-127, 127).to(torch.int8))  # (out, in)
        self.register_buffer("s_w", s_w)
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().clone())
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).float()  # (M, in)
        if x2.shape[0] <= 16:
            raise ValueError(f"torch._int_mm needs more than 16 rows (tokens), got {x2.shape[0]}")
        s_x = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0  # (M, 1)
        x_q = torch.round(x2 / s_x).clamp(-127, 127).to(torch.int8)
        y = torch._int_mm(x_q, self.w_q.t()).float() * s_x * self.s_w  # (M, out): int32 -> float, rescaled
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def int8_intmm(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` with every encoder Linear replaced by :class:`Int8DynamicLinear`.

    The pooler and classifier stay fp32 (the classifier's 2 outputs are not a multiple of 8).
    Returns the copy and the names of the replaced Linears.
    """
    model = copy.deepcopy(model)
    replaced = []
    for name, mod in list(model.bert.encoder.named_modules()):
        for child, sub in list(mod.named_children()):
            if isinstance(sub, nn.Linear):
                setattr(mod, child, Int8DynamicLinear(sub))
                replaced.append(f"bert.encoder.{name}.{child}".replace("..", "."))
    return model, replaced


def ao_dynamic_int8(model: nn.Module) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` (qint8, every nn.Linear) of a CPU copy of ``model``."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch's own deprecation notice for quantized tensors; the API still runs
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(copy.deepcopy(model).cpu(), {nn.Linear}, dtype=torch.qint8)
