"""The report's Quantization section: bits per layer and how the budget was met (hawq), and what an n-bit
deployment step wrote (ort_matmul_nbits)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import DASH, plain
from compresslab.report.render import Block, Heading, Table


def quantization_section(m: Mapping[str, Any]) -> list[Block]:
    """Weight bits of quantizing steps (``bits_per_layer`` / ``avg_bits``, e.g. hawq) and what an n-bit
    deployment step wrote (``n_matmul_nbits``, e.g. ort_matmul_nbits): bits per layer, the budget and
    how it was met, deployed bits and the graph's parity. Nothing without such steps."""
    out: list[Block] = []
    for s in F.steps(m):
        met = F.as_dict(F.get(s, "result", "metrics"))
        label = F.step_label(s)
        if "bits_per_layer" in met:
            alloc = F.as_dict(met.get("allocation"))
            facts = [["average bits (encoder Linears; fp32 counts 32)", plain(met.get("avg_bits"))],
                     ["allocation", plain(alloc.get("method"))],
                     ["budget (average bits)", plain(alloc.get("budget_avg_bits"))],
                     ["sensitivity", plain(F.get(met, "sensitivity", "method"))],
                     ["groups", f"{plain(met.get('group'))} (block_size {plain(met.get('block_size'))})"],
                     ["QAT steps", plain(F.get(met, "qat", "steps") or 0)]]
            if pinned := F.as_dict(alloc.get("pinned")):  # widths the user fixed (hawq rules), in the budget
                facts.append(["pinned by rules (counted in the budget)", plain(pinned)])
            emb = F.as_dict(met.get("embedding"))
            if emb:
                facts.append(["word embeddings", ", ".join(f"{k}: {plain(F.get(v, 'bits'))} bits"
                                                           for k, v in emb.items())])
            out.append(Table(["fact", label], facts, f"{label}: weight quantization"))
            rows = [[k, " ".join(str(b) for b in (v if isinstance(v, list) else [v]))]
                    for k, v in F.as_dict(met.get("bits_per_layer")).items()]
            out.append(Table(["layer", "bits per Linear (32 = fp32)"], rows,
                             f"{label}: bits per Linear in module order (default targets: q k v o ffn_in ffn_out)"))
        if "n_matmul_nbits" in met:
            par = F.as_dict(met.get("parity"))
            hist = F.as_dict(met.get("deployed_bits_histogram"))
            facts = [["accuracy_level", plain(met.get("accuracy_level"))],
                     ["MatMulNBits / GatherBlockQuantized nodes",
                      f"{plain(met.get('n_matmul_nbits'))} / {plain(met.get('n_gather_block_quantized'))}"],
                     ["deployed bits histogram (nodes)",
                      ", ".join(f"{b} bits: {plain(c)}" for b, c in hist.items()) or DASH],
                     ["average bits nominal / deployed (quantized nodes)",
                      f"{plain(met.get('avg_bits_nominal'))} / {plain(met.get('avg_bits_deployed'))}"],
                     ["parity max |Δlogits| vs the fake-quant graph", plain(par.get("max_abs_diff"))],
                     ["parity tolerance", plain(par.get("atol"))],
                     ["kernel paths", plain(met.get("kernel_paths"))]]
            out.append(Table(["fact", label], facts, f"{label}: n-bit deployment"))
    return [Heading("Quantization"), *out] if out else []
