"""compresslab.load given a run's export dir (an ONNX graph or an OpenVINO IR) says what the dir is and what reads it,
instead of listing the torch weight files it lacks."""

import json

import pytest

import compresslab
from compresslab.models.loading import CheckpointError


@pytest.mark.parametrize("graph", ["model.onnx", "openvino_model.xml"])
def test_load_names_an_exported_graph_and_what_reads_it(tmp_path, graph):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / graph).write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"exported graph \({graph}\).*compresslab.evaluate"):
        compresslab.load(tmp_path)
