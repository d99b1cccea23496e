"""What an exported file computes in, read from the graph itself. One reading for every stage that labels a
file (deploy's record, the bench stage's cells), so one file never carries two labels in one manifest.

Classes: ``nbits`` (n-bit weights: ONNX Runtime's ``MatMulNBits`` / ``GatherBlockQuantized``; the bits each node
stores are its ``bits`` attribute, the *deployed* bits: a 3-bit layer is stored as 4-bit codes), ``int8``
(QDQ pairs, ``MatMulInteger``/``DynamicQuantizeLinear``, ``QLinearMatMul``; in an OpenVINO IR, FakeQuantize or
i8/u8 constants) or ``fp32``.
"""

from __future__ import annotations

from pathlib import Path

INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"})
NBITS_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})
_DEFAULT_BITS = 4  # both contrib ops' ``bits`` default (ONNX Runtime's operator docs)


def _nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _ir_is_int8(xml: Path) -> bool:
    text = xml.read_text(errors="ignore")
    return 'type="FakeQuantize"' in text or 'element_type="i8"' in text or 'element_type="u8"' in text


def is_int8(path: str | Path) -> bool:
    """Does the graph (ONNX, or an OpenVINO IR's ``.xml``) hold int8 quantization?"""
    path = Path(path)
    if path.suffix == ".xml":
        return _ir_is_int8(path)
    return any(n.op_type in INT8_OPS for n in _nodes(path))


def _bits(nodes: list) -> list[int]:
    return sorted({next((int(a.i) for a in n.attribute if a.name == "bits"), _DEFAULT_BITS)
                   for n in nodes if n.op_type in NBITS_OPS})


def nbits_of(path: str | Path) -> list[int]:
    """The distinct deployed bit widths of the n-bit nodes in an ONNX file, ascending ([] when none)."""
    return _bits(_nodes(Path(path)))


def precision_class(path: str | Path) -> str:
    """``nbits``, ``int8`` or ``fp32`` (an IR ``.xml``: ``int8`` or ``fp32``)."""
    path = Path(path)
    if path.suffix == ".xml":
        return "int8" if _ir_is_int8(path) else "fp32"
    ops = {n.op_type for n in _nodes(path)}
    if ops & NBITS_OPS:
        return "nbits"
    return "int8" if ops & INT8_OPS else "fp32"


def precision_label(path: str | Path) -> str:
    """A file's precision as a person reads it: ``fp32``, ``int8``, or for n-bit files the deployed widths:
    ``int4`` when every n-bit node stores 4 bits, ``int2+int4+int8`` for a mix (a Hessian allocation)."""
    if Path(path).suffix == ".xml":
        return precision_class(path)
    nodes = _nodes(Path(path))  # read once: the class and the widths come from the same node list
    bits = _bits(nodes)
    if bits:
        return "+".join(f"int{b}" for b in bits)
    return "int8" if any(n.op_type in INT8_OPS for n in nodes) else "fp32"
