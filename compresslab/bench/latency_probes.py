"""The models the latency table times (:mod:`compresslab.bench.latency_table`), made and exported as the real model
is deployed: one-layer probes, whole-model calibration points and, for the preflight's reachability check
(:mod:`compresslab.pruning.reachable`), the dense model of a planned architecture. Weights are random: latency does
not depend on their values. Split from the table's module by job (its size).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresslab.bench.latency_runtimes import as_deployed, reads_plain

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def probe_model(model: nn.Module, heads: int, ffn: int) -> nn.Module:
    """A fresh one-layer model of ``model``'s architecture with ``heads`` heads and ``ffn`` neurons.

    Weights are random (latency does not depend on their values). The vocabulary is cut to a
    size above the position table, because ORT fuses the embeddings only when the word table is
    the larger one; the embeddings are in the base probe and cancel out of every entry.
    """
    return _fresh_model(model, heads, ffn, layers=1,
                        vocab=int(getattr(model.config, "max_position_embeddings", 512)) + 64)


def uniform_model(model: nn.Module, heads: int, ffn: int) -> nn.Module:
    """A fresh model of ``model``'s dense architecture (all layers, its vocabulary) with every
    layer shrunk to ``heads`` heads and ``ffn`` neurons: a whole-model calibration point.
    Weights are random (latency does not depend on their values)."""
    return _fresh_model(model, heads, ffn)


def _fresh_model(model: nn.Module, heads: int, ffn: int, *, layers: int | None = None,
                 vocab: int | None = None) -> nn.Module:
    from compresslab.models.adapters import get_adapter
    from compresslab.models.structure import apply_structure

    cfg = copy.deepcopy(model.config)
    cfg.__dict__.pop("compresslab_structure", None)  # built dense from the config, then shrunk
    if layers is not None:
        setattr(cfg, "n_layers" if hasattr(cfg, "n_layers") else "num_hidden_layers", layers)
    if vocab is not None:
        cfg.vocab_size = vocab
    fresh = type(model)(cfg).eval()
    apply_structure(fresh, [{"heads": heads, "ffn": ffn}] * get_adapter(fresh).num_layers)
    return fresh


def _plain_export(probe: nn.Module, path: Path) -> None:
    """Export ``probe`` to ``path`` as traced (no fusion, no parity: probes are only timed)."""
    import torch

    from compresslab.export import export_onnx, input_names_for

    ids = torch.randint(0, 64, (2, 8))
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    export_onnx(probe, path, sample, input_names_for(probe), probe=True)


def export_probe(probe: nn.Module, path: Path) -> int:
    """Export and fuse ``probe`` as the real model is deployed on ORT (no parity: probes are only timed).

    Returns the number of fused Attention nodes, so the caller can flag an unfused probe.
    """
    from compresslab.export import optimize_graph
    from compresslab.export.optimize import heads_and_hidden

    raw = path.with_name(f"{path.stem}.raw.onnx")
    _plain_export(probe, raw)
    heads, hidden = heads_and_hidden(probe.config)
    fused = optimize_graph(raw, path, num_heads=heads, hidden_size=hidden).fused_attention_nodes
    raw.unlink()
    return fused


def deploy_probe(probe: nn.Module, path: Path, s: Any, expect_fused: int) -> Path:
    """Export ``probe`` to ``path`` and return the file ``s.runtime`` times (see :func:`as_deployed`); ``s``: a
    ``latency_table.TableSettings`` (not imported: that module imports this one).

    On the ORT runtimes, warns when fewer than ``expect_fused`` Attention nodes fused (the deployed export fuses
    all)."""
    if not reads_plain(s.runtime):
        if export_probe(probe, path) != expect_fused:
            log.warning("latency probe %s: attention did not fuse as deployed", path.stem)
        if s.runtime == "ort":  # the fused export itself
            return path
    else:
        _plain_export(probe, path)
    return as_deployed(path, s, int(probe.config.vocab_size))
