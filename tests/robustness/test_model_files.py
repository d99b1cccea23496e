"""Issue #12, kind 1 for models given as input: model directories with broken or unusual files (truncated weights,
a pickled payload, a missing shard or config, another architecture or tokenizer), loaded as the CLI's
``model=local model.source=DIR`` and ``compresslab.load`` load them. Split from test_models.py."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compresslab.checkpoint import load, load_pretrained
from compresslab.models.adapters import UnsupportedArchitectureError
from compresslab.models.loading import CheckpointError
from compresslab.models.tiny import tiny_model

from _models import _cli_model, _compose, _data, _encode, _inputs, _prepare, _save

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- files
@pytest.mark.case(name="a truncated model.safetensors", kind=1,
                  expected="CheckpointError naming the file, before any data is read or model built")
def test_truncated_safetensors(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "trunc")
    w = src / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"trunc/model\.safetensors.*truncated")
    with pytest.raises(CheckpointError, match="truncated"):
        load(src)


@pytest.mark.case(name="a truncated pytorch_model.bin", kind=1, expected="CheckpointError naming the file")
def test_truncated_torch_bin(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "trunc")
    (src / "model.safetensors").unlink()
    torch.save(tiny_model().state_dict(), src / "pytorch_model.bin")
    w = src / "pytorch_model.bin"
    w.write_bytes(w.read_bytes()[: w.stat().st_size - 200])
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"pytorch_model\.bin.*truncated")


@pytest.mark.case(name="a checkpoint with only pytorch_model.bin", kind=1, bad_input=False,
                  expected="loaded (weights_only=True) like a safetensors one")
def test_torch_bin_only_checkpoint(tiny_tok, tmp_path, observe):
    m = tiny_model()
    src = _save(m, tiny_tok, tmp_path / "bin")
    (src / "model.safetensors").unlink()
    torch.save(m.state_dict(), src / "pytorch_model.bin")
    state, _ = _cli_model(_compose(tmp_path, src))
    torch.testing.assert_close(_encode(state.model, tiny_tok), _encode(m, tiny_tok))
    observe("loaded; encoder outputs equal to the saved model")


class _Payload:
    """Anything but tensors in a pickle: weights_only=True must refuse to build it."""


@pytest.mark.case(name="a pytorch_model.bin that pickles more than tensors", kind=1,
                  expected="refused (weights_only=True) with an error naming the file; nothing executed")
def test_torch_bin_with_objects_is_refused(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "pickle")
    (src / "model.safetensors").unlink()
    torch.save({**tiny_model().state_dict(), "extra": _Payload()}, src / "pytorch_model.bin")
    said = expect_clear(lambda: load_pretrained(src), match=r"pytorch_model\.bin")
    # trial 48, 9: torch's words are quoted from their start (once from the tail: "torch said: ion. Do it...")
    try:
        torch.load(src / "pytorch_model.bin", weights_only=True)
    except Exception as e:
        torch_words = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())  # without torch's bold
    quoted = said.split("torch said: ", 1)[1].removesuffix("…")
    assert torch_words.startswith(quoted) and len(quoted) >= min(len(torch_words), 200) and "\x1b" not in said


@pytest.mark.case(name="a directory in an unknown weights format (e.g. flax/TF only)", kind=1,
                  expected="an error naming the files found and the formats compresslab reads")
def test_unknown_weights_format_is_named(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "flax")
    (src / "model.safetensors").rename(src / "flax_model.msgpack")
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"no model\.safetensors.*pytorch_model\.bin.*flax_model")


@pytest.mark.case(name="a shard index listing a missing shard", kind=1, expected="an error naming the missing shard")
def test_missing_shard_is_named(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "shards")
    (src / "model.safetensors").rename(src / "model-00001-of-00002.safetensors")
    weight_map = {"bert.pooler.dense.weight": "model-00002-of-00002.safetensors"}
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"model-00002-of-00002")


@pytest.mark.case(name="model dir without config.json", kind=1, expected="an error naming config.json")
def test_missing_config(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "noconfig")
    (src / "config.json").unlink()
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"config\.json")


@pytest.mark.case(name="model dir without tokenizer files", kind=1,
                  expected="an error naming the directory and tokenizer.save_pretrained")
def test_missing_tokenizer(tmp_path, expect_clear):
    src = tmp_path / "notok"
    tiny_model().save_pretrained(src)
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"no tokenizer in .*notok.*save_pretrained")


@pytest.mark.case(name="a tokenizer with more tokens than the model's embedding table", kind=1,
                  expected="an error naming vocab_size, before training (else an index error mid-run)")
def test_tokenizer_of_another_model(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(vocab_size=32), tiny_tok, tmp_path / "smallvocab")
    expect_clear(lambda: _cli_model(_compose(tmp_path, src)), match=r"64 tokens.*32 rows.*vocab_size")


@pytest.mark.case(name="an architecture compresslab has no adapter for", kind=1,
                  expected="UnsupportedArchitectureError listing bert, roberta, distilbert")
def test_unsupported_architecture(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "gpt")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(cfg))
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match="supported: bert, roberta, distilbert",
                 errors=(UnsupportedArchitectureError,))


@pytest.mark.case(name="task.max_length past RoBERTa's usable positions (max_position_embeddings - 2)", kind=1,
                  expected="an error naming task.max_length and the limit, before any work")
def test_roberta_position_limit(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model("roberta"), tiny_tok, tmp_path / "roberta")  # max_position_embeddings=72: 70 usable
    expect_clear(lambda: _prepare(_compose(tmp_path, src, "task.max_length=72")),
                 match=r"task\.max_length=72.*at most 70 tokens")


@pytest.mark.case(name="encoder weights from another model (names do not match config.json)", kind=1,
                  expected="an error listing the missing encoder weights, not a silently random encoder")
def test_weights_of_another_model(tiny_tok, tmp_path, expect_clear):
    from safetensors.torch import save_file

    src = _save(tiny_model(), tiny_tok, tmp_path / "renamed")
    state = {k.replace("encoder.layer.1.", "encoder.blocks.1."): v.contiguous() for k, v in tiny_model().state_dict().items()}
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    expect_clear(lambda: load_pretrained(src), match=r"lacks .* encoder weight.*encoder\.layer\.1")


# ----------------------------------------------------------------------------- quiet loading
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
@pytest.mark.case(name="transformers' load table for an expected fresh head", kind="own", bad_input=False,
                  expected="no table; one compresslab line saying a fresh head is added; the encoder as saved")
def test_load_table_is_replaced_by_one_line(arch, tiny_tok, tmp_path, capfd, caplog, observe):
    encoder = tiny_model(arch).base_model  # a bare encoder, like the embedded default
    src = _save(encoder, tiny_tok, tmp_path / "encoder")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        model, _ = load_pretrained(src, num_labels=3)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err
    lines = [r.getMessage() for r in caplog.records if "fresh" in r.getMessage()]
    assert len(lines) == 1 and "pretrained encoder; a fresh 3-label classification head is added" in lines[0]
    torch.testing.assert_close(_encode(model, tiny_tok), _encode(encoder, tiny_tok))
    assert model(**_inputs(tiny_tok)).logits.shape == (2, 3)
    observe(lines[0])


@pytest.mark.case(name="ORT's 'image classification pre-processing' warning on int8", kind="own", bad_input=False,
                  expected="not printed")
def test_ort_preprocessing_warning_is_silenced(tmp_path, caplog, observe):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compresslab.export.ort_quant import quantize_dynamic_int8

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING):
        quantize_dynamic_int8(tmp_path / "m.onnx", tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx").is_file()
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    observe("no pre-processing warning logged")


# ----------------------------------------------------------------------------- the real CLI
@pytest.mark.case(name="CLI: model=local model.source=<dir with a truncated model.safetensors>", kind=1,
                  expected="exit code 2, one message naming the file on stderr, no traceback")
def test_cli_truncated_checkpoint(tiny_tok, tmp_path, observe):
    src = _save(tiny_model(), tiny_tok, tmp_path / "trunc")
    w = src / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    out = subprocess.run([sys.executable, "-m", "compresslab", "+pipeline=int8", "debug=smoke", "model=local",
                          f"model.source={src}", f"paths.output_dir={tmp_path}/out",
                          f"paths.cache_dir={tmp_path}/cache", *_data(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "model.safetensors" in out.stderr and "truncated" in out.stderr
    observe(f"exit 2: {[l for l in out.stderr.splitlines() if 'model.safetensors' in l][0][:300]}")
