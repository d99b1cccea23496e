"""The report's Size section: the ONNX files the run exported and deployed, and the checkpoint formats each pass
measured for its own model, in separate tables (ratios against each one's fp32 file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import DASH, mb, times
from compresslab.report.render import Block, Heading, Table
from compresslab.report.summary import ir_origin

# Step and export names of the dense ONNX files, as opposed to checkpoint formats a pass measured.
ONNX_SIZES = ("ort_fp32", "deployed", "deployed_onnx")  # deployed: an OpenVINO IR when deploy chose one


def _size_table(sizes: Mapping[str, Any], ref: str | None, caption: str,
                names: Mapping[str, str] | None = None) -> Table:
    """format | encoder | total | ratios against ``ref`` (a row of ``sizes``) | embeddings | head."""
    ref_e, ref_t = F.num(F.get(sizes, ref, "encoder")), F.num(F.get(sizes, ref, "total"))

    def ratio(v: float | None, r: float | None) -> str:
        return times(r / v) if v and r else DASH

    rows = []
    for fmt_name, v in sizes.items():
        enc, tot = F.num(F.get(v, "encoder")), F.num(F.get(v, "total"))
        rows.append([(names or {}).get(fmt_name, fmt_name), mb(enc), mb(tot), ratio(enc, ref_e), ratio(tot, ref_t),
                     mb(F.num(F.get(v, "embeddings"))), mb(F.num(F.get(v, "head")))])
    return Table(["format", "encoder (MB)", "total (MB)", f"{ref or DASH}/x encoder", f"{ref or DASH}/x total",
                  "embeddings (MB)", "head (MB)"], rows, caption)


def _deployed_files(m: Mapping[str, Any]) -> str:
    """The caption of the deployed files' sizes: what each row is, an IR's true source included."""
    label = F.deployed_label(m)
    text = f"Deployed files: ort_fp32 is the dense teacher's export, {label} the file the run ships"
    if F.get(m, "export", "deployed", "runtime") == "openvino":
        origin = ir_origin(m, brief=True)
        onnx = F.run_relative(F.get(m, "export", "deployed", "onnx_path"), m)
        text += (": an OpenVINO IR (.xml + .bin: total only)" + (f", {origin[0]}" if origin else "")
                 + f"; deployed_onnx is the pipeline's ONNX file{f' {onnx}' if onnx else ''}"
                 + (", which the IR was not made from" if origin and origin[1] else ""))
    return text + ". On-disk bytes; the encoder excludes embeddings and the head, the total is the whole file."


def size_section(m: Mapping[str, Any]) -> list[Block]:
    """Two kinds of size, never mixed in one table: the ONNX files the run exported and deployed
    (ratios against the fp32 export), and the checkpoint formats a pass measured for its own model
    (ratios against that pass's fp32 checkpoint)."""
    size = {k: v for k, v in F.as_dict(m.get("size")).items() if isinstance(v, Mapping)}
    if not size:
        return []
    onnx = {k: v for k, v in size.items() if k in ONNX_SIZES}
    out: list[Block] = [Heading("Size")]
    if onnx:
        out.append(_size_table(onnx, "ort_fp32" if "ort_fp32" in onnx else None, _deployed_files(m),
                               {"deployed": F.deployed_label(m)}))
    by_step: dict[str, dict[str, Any]] = {}
    for s in F.steps(m):
        for k in F.as_dict(F.get(s, "result", "metrics", "size")):
            if k in size and k not in onnx:
                by_step.setdefault(F.step_label(s), {})[k] = size[k]
    placed = {k for d in by_step.values() for k in d}
    rest = {k: v for k, v in size.items() if k not in onnx and k not in placed}
    if rest:
        by_step["checkpoint"] = rest
    for label, formats in by_step.items():
        ref = "fp32" if "fp32" in formats else None
        out.append(_size_table(formats, ref, f"Checkpoint formats of {label} (safetensors files, what "
                                             "compresslab.save writes; not the ONNX file): on-disk bytes, "
                                             f"ratios against {ref or 'no fp32 row'}."))
    return out
