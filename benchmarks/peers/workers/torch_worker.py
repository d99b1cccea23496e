"""A PyTorch peer in its own venv (issue 14): Intel Neural Compressor 3.x dynamic int8 (its PT2E path) or
torchao's ``Int8DynamicActivationInt8WeightConfig``, on the teacher's checkpoint, each as its documentation
recommends on an x86 CPU: quantize, then ``torch.compile`` (inductor lowers the int8 patterns to its int8
kernels; eager runs the reference arithmetic). Imports torch, transformers, the tool and numpy only.

    python torch_worker.py SPEC.json

spec: ``method`` (``inc_dynamic`` | ``torchao_int8_dynamic``), ``mode`` (``build`` | ``time``),
``checkpoint`` (a transformers directory), ``head`` (``classification`` | ``encoder``: which output is
scored), ``input_names``, ``threads``, ``compile`` (bool), ``batches`` (the dev batches, .npz) and, for
``time``: ``artifact`` (what ``build`` saved), ``shapes`` [[batch, seq]...], ``warmup``, ``runs``,
``rounds``, ``vocab_size``.

``build`` quantizes, saves the quantized module (``work/model.pt``: the deployed artifact; its size is
what is reported) and writes the logits of every dev batch (``work/logits.npz``). ``time`` loads that file,
compiles it as ``build`` did and times it interleaved with the dense teacher in eager fp32 (the suite's
``dense_torch_fp32``, so the ratio to our cells can be bridged) in this one process: fixed shapes, then
real lengths over the dev batches.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (this directory, not a package: the worker runs in a foreign venv)

METHODS = ("inc_dynamic", "torchao_int8_dynamic")
NAMES = ("input_ids", "attention_mask", "token_type_ids")


class Logits(torch.nn.Module):
    """An HF model called with the feeds as positional tensors (what torch.export traces); returns the
    scored output: logits, or the last hidden state of a bare encoder (``head="encoder"``)."""

    def __init__(self, model: Any, head: str) -> None:
        super().__init__()
        self.m, self.head = model, head

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        out = self.m(**kw)
        return out.logits if self.head == "classification" else out.last_hidden_state


def load_dense(spec: dict[str, Any]) -> Any:
    from transformers import AutoModel, AutoModelForSequenceClassification

    if list(spec["input_names"]) != list(NAMES[:len(spec["input_names"])]):
        raise ValueError(f"input_names must be {list(NAMES)} or its first two, got {spec['input_names']}")
    cls = AutoModelForSequenceClassification if spec["head"] == "classification" else AutoModel
    model = cls.from_pretrained(spec["checkpoint"], attn_implementation="eager").eval()
    if spec["head"] == "encoder" and getattr(model, "pooler", None) is not None:
        # an embedding is mean-pooled from the last hidden state: the pooler (Linear -> Tanh) would be dead code
        # in the exported graph, and INC's X86InductorQuantizer fails on that unused pair (IndexError in
        # _get_output_nodes_of_partitions); BERT/RoBERTa skip a None pooler, and no other cell deploys it
        model.pooler = None
    return Logits(model, spec["head"]).eval()


def _example(spec: dict[str, Any], batches: list[dict[str, np.ndarray]]) -> tuple:
    b = batches[0]
    return tuple(torch.from_numpy(np.ascontiguousarray(b[n])) for n in spec["input_names"])


def quantize(spec: dict[str, Any], dense: Any, batches: list[dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any]]:
    """The tool's quantized module (not compiled) and what it recorded."""
    method = spec["method"]
    if method == "torchao_int8_dynamic":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        q = copy.deepcopy(dense)
        quantize_(q, Int8DynamicActivationInt8WeightConfig())  # per-token int8 activations, per-channel int8 weights
        return q, {"config": "Int8DynamicActivationInt8WeightConfig()", "api": "torchao.quantization.quantize_"}
    if method == "inc_dynamic":
        from neural_compressor.torch.export import export
        from neural_compressor.torch.quantization import DynamicQuantConfig, convert, prepare

        example = _example(spec, batches)
        spec["max_seq"] = int(getattr(dense.m.config, "max_position_embeddings", 512))
        exported = export(model=copy.deepcopy(dense), example_inputs=example, dynamic_shapes=_dynamic(spec, dense))
        prepared = prepare(exported, quant_config=DynamicQuantConfig())
        # INC's documented dynamic recipe (export -> prepare -> convert, docs/source/3x/PT_DynamicQuant.md) never
        # runs the weight observers: convert then quantizes every weight with scale 1.0 / zero point 0 and the model
        # returns the same logits for every input (INC 3.10 + torch 2.13: SST-2 dev 0.509, session 9). One forward
        # pass on random token ids sets the weight scales only (activation qparams are computed at run time), so
        # no example of any split is seen; recorded as a departure from the documented recipe.
        b, s_len = example[0].shape
        feeds = common.random_feeds(int(b), int(s_len), int(dense.m.config.vocab_size), list(spec["input_names"]))
        with torch.no_grad():
            prepared(*(torch.from_numpy(feeds[n]) for n in spec["input_names"]))
        q = convert(prepared)
        return q, {"config": "DynamicQuantConfig() (W8A8 dynamic, X86InductorQuantizer, PT2E)",
                   "api": "neural_compressor.torch.export.export + quantization.prepare/convert",
                   "departure": "one forward pass of the prepared model on random token ids before convert: the "
                                "documented recipe leaves the weight observers unrun (every weight scale 1.0, "
                                "constant logits)"}
    raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")


def save(spec: dict[str, Any], q: Any, path: Path, example: tuple = ()) -> None:
    """torchao: the state dict (its quantized tensor subclasses serialize; whole modules do not pickle),
    as torchao's serialization guide does; INC: the converted graph, exported again and saved with
    ``torch.export.save`` (a PT2E graph module does not pickle)."""
    if spec["method"] == "torchao_int8_dynamic":
        torch.save(q.state_dict(), path)
        return
    torch.export.save(torch.export.export(q, example, dynamic_shapes=_dynamic(spec, q)), path)


def _dynamic(spec: dict[str, Any], model: Any) -> dict[str, Any]:
    cfg = getattr(getattr(model, "m", None), "config", None)
    max_seq = int(getattr(cfg, "max_position_embeddings", spec.get("max_seq", 512)))
    b, s = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=max_seq)
    return {n: {0: b, 1: s} for n in spec["input_names"]}


def load(spec: dict[str, Any], path: str) -> Any:
    """What :func:`save` wrote, as a module (a trusted local file this worker wrote)."""
    if spec["method"] == "torchao_int8_dynamic":
        import torchao  # noqa: F401  (registers the tensor subclasses the state dict holds)

        q = load_dense(spec)
        q.load_state_dict(torch.load(path, weights_only=False), assign=True)
        return q.eval()
    return torch.export.load(path).module()


def compiled(spec: dict[str, Any], q: Any) -> Any:
    """``torch.compile`` as the tool's docs say (INC: inductor freezing on); eager when ``compile`` is off."""
    if not spec.get("compile", True):
        return q
    if spec["method"] == "inc_dynamic":
        from torch._inductor import config

        config.freezing = True  # INC's docs: fold the weights, replace the Q/DQ patterns with int8 ops
    return torch.compile(q)


def runner(model: Any, names: list[str]):

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)
        with torch.no_grad():
            return model(*args).float().numpy()

    return run


def build(spec: dict[str, Any]) -> dict[str, Any]:
    batches = common.load_batches(spec["batches"])
    dense = load_dense(spec)
    t0 = time.perf_counter()
    q, info = quantize(spec, dense, batches)
    info["quantize_s"] = round(time.perf_counter() - t0, 2)
    art = Path(spec["work"]) / "model.pt"
    try:  # the deployed module, loaded again by ``time`` (same file: MEASURE.md)
        save(spec, q, art, _example(spec, batches))
        info["artifact"], info["size_bytes"] = str(art), art.stat().st_size
    except Exception as e:  # noqa: BLE001 - some graph modules do not pickle: timed from a rebuild then
        info["artifact"], info["artifact_error"] = None, common.error_text(e)
    t0 = time.perf_counter()
    run = runner(compiled(spec, q), list(spec["input_names"]))
    logits = [run(b) for b in batches]
    info["score_s"] = round(time.perf_counter() - t0, 2)
    common.save_logits(str(Path(spec["work"]) / "logits.npz"), logits)
    return info


def time_it(spec: dict[str, Any]) -> dict[str, Any]:
    batches = common.load_batches(spec["batches"])
    names = list(spec["input_names"])
    dense = load_dense(spec)
    if spec.get("artifact"):
        q = load(spec, spec["artifact"])
        source = "artifact"
    else:
        q, _ = quantize(spec, dense, batches)
        source = "rebuilt (the artifact did not pickle)"
    models = {"peer": runner(compiled(spec, q), names), "dense_torch_fp32": runner(dense, names)}
    lat = {}
    for b, s in spec["shapes"]:
        feeds = common.random_feeds(int(b), int(s), int(spec["vocab_size"]), names)
        lat[f"b{b}xs{s}"] = common.interleaved(models, feeds, int(b), warmup=int(spec["warmup"]) + 2,
                                               runs=int(spec["runs"]))
    for b in batches:  # every dev shape seen once before it is timed (a compiled model recompiles per new shape)
        for run in models.values():
            run(b)
    real = common.real_lengths(models, batches, rounds=int(spec["rounds"]))
    return {"latency": lat, "real_length": real, "source": source,
            "order": "one process: the peer and the dense teacher (eager fp32) interleaved, medians"}


def main(argv: list[str]) -> None:
    spec = common.read_spec(argv)
    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    warnings.simplefilter("ignore")
    out: dict[str, Any] = {"method": spec["method"], "mode": spec["mode"], "threads": threads,
                           "versions": common.versions(["torch", "transformers", "torchao", "neural-compressor-pt",
                                                        "numpy"]),
                           "torch_cuda": torch.version.cuda, "compile": bool(spec.get("compile", True))}
    out.update(build(spec) if spec["mode"] == "build" else time_it(spec))
    common.write_out(spec, out)


if __name__ == "__main__":
    main(sys.argv[1:])
