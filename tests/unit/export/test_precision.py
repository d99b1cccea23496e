"""compresslab.export.precision: one reading of what a file computes in, for deploy's record and the bench stage's
cells. An n-bit file is labelled by the widths its nodes store (a Hessian mix is not "int4")."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from compresslab.export.precision import is_int8, nbits_of, precision_class, precision_label


def _graph(path: Path, nodes: list) -> Path:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(path))  # never run: only its node list is read
    return path


def _nbits(name: str, bits: int | None) -> onnx.NodeProto:
    extra = {} if bits is None else {"bits": bits}
    return helper.make_node("MatMulNBits", ["x", f"w{name}", f"s{name}"], [f"y{name}"], domain="com.microsoft",
                            K=4, N=4, block_size=32, **extra)


@pytest.mark.parametrize("nodes, cls, label, bits", [
    ([helper.make_node("MatMul", ["x", "w"], ["y"])], "fp32", "fp32", []),
    ([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])], "int8", "int8", []),
    ([helper.make_node("DequantizeLinear", ["w", "s"], ["y"])], "int8", "int8", []),
    ([_nbits("a", 4), _nbits("b", None)], "nbits", "int4", [4]),             # bits defaults to 4 (ORT's op docs)
    ([_nbits("a", 2), _nbits("b", 4), _nbits("c", 8)], "nbits", "int2+int4+int8", [2, 4, 8]),
    ([_nbits("a", 8), helper.make_node("GatherBlockQuantized", ["t", "i", "s"], ["e"], domain="com.microsoft",
                                       bits=4)], "nbits", "int4+int8", [4, 8]),
])
def test_the_graph_says_what_it_computes_in(tmp_path, nodes, cls, label, bits):
    p = _graph(tmp_path / "m.onnx", nodes)
    assert (precision_class(p), precision_label(p), nbits_of(p)) == (cls, label, bits)
    assert is_int8(p) == (cls == "int8")


def test_an_openvino_ir_is_read_from_its_xml(tmp_path):
    fq, plain = tmp_path / "q.xml", tmp_path / "f.xml"
    fq.write_text('<net><layers><layer id="1" type="FakeQuantize"/></layers></net>')
    plain.write_text('<net><layers><layer id="1" type="MatMul"/><data element_type="f32"/></layers></net>')
    assert precision_class(fq) == "int8" and is_int8(fq) and precision_label(fq) == "int8"
    assert precision_class(plain) == "fp32" and not is_int8(plain)


def test_deploy_and_bench_read_files_through_it():
    """The class of fault: two stages with their own op sets labelled one file two ways (int4 vs nbits)."""
    import compresslab.pipeline.bench as bench
    import compresslab.pipeline.deploy as deploy

    assert deploy._precision_of is precision_class and deploy.is_int8 is is_int8
    assert bench.precision_label is precision_label and not hasattr(bench, "_onnx_precision")
