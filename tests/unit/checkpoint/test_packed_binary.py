"""model.binary.safetensors: BiBERT's frozen binary modules at 1 bit per weight, exact reload, real sizes,
and clear errors for a mismatched config, a damaged file and a model that is not frozen."""

from __future__ import annotations

import json
import math

import pytest
import torch

import compresslab
from compresslab.checkpoint import FORMATS
from compresslab.checkpoint.packed import _digest
from compresslab.checkpoint.packed_binary import BINARY, BINARY_FILE, binary_sizes, stamp_binary
from compresslab.models.binary import (
    BI_ATTENTION, BINARY_KEY, BinaryEmbedding, BinaryLinear, binarize_model, binary_modules, freeze_binary)
from compresslab.models.loading import CheckpointError
from compresslab.models.tiny import tiny_model

ARCHS = ("bert", "roberta", "distilbert")


def _binary(arch: str = "bert", attention: str = "bool"):
    model = tiny_model(arch)
    binarize_model(model, attention=attention)
    freeze_binary(model)
    return model.eval()


def _inputs():
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0  # padding: Bi-Attention's mask must survive the reload too
    return {"input_ids": torch.randint(5, 60, (3, 12), generator=g), "attention_mask": mask}


def _saved(tmp_path, model, packed_only: bool = True):
    ck = compresslab.save(model, tmp_path / "ck", formats=["packed_binary"])
    if packed_only:
        (ck / "model.safetensors").unlink()
    return ck


def _edit_config(ck, **changes):
    cfg = json.loads((ck / "config.json").read_text())
    cfg.update(changes)
    (ck / "config.json").write_text(json.dumps(cfg))
    return cfg


# ---- round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_load_restores_the_frozen_binary_model_bit_for_bit(tmp_path, arch):
    model = _binary(arch)
    x = _inputs()
    ref = model(**x).logits
    ck = _saved(tmp_path, model, packed_only=False)
    assert (ck / BINARY_FILE).is_file()
    dense_back = compresslab.load(ck)
    (ck / "model.safetensors").unlink()
    for back in (dense_back, compresslab.load(ck, attn_implementation="eager")):  # dense file, packed file alone
        assert back.config._attn_implementation == BI_ATTENTION  # Bi-Attention, whatever was asked for
        assert getattr(back.config, BINARY_KEY) == getattr(model.config, BINARY_KEY)
        mods = binary_modules(back)
        assert list(mods) == list(binary_modules(model)) and all(m.frozen and m.ties == "plus" for m in mods.values())
        state = back.state_dict()
        for k, v in model.state_dict().items():
            assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
        assert torch.equal(back(**x).logits, ref)


def test_softmax_mode_and_a_resave_round_trip(tmp_path):
    model = _binary("bert", attention="softmax")
    x = _inputs()
    ref = model(**x).logits
    back = compresslab.load(_saved(tmp_path / "a", model))
    assert back.bert.encoder.layer[0].attention.self.binary_attention == "softmax"
    again = compresslab.load(_saved(tmp_path / "b", back))  # a loaded model saves as it was
    assert torch.equal(again(**x).logits, ref)
    assert "packed_binary" in FORMATS and FORMATS["packed_binary"].file == BINARY_FILE


# ---- layout and sizes ----------------------------------------------------------------------------

def test_signs_take_one_bit_each_little_endian():
    model = _binary("bert")
    tensors, meta = BINARY.encode(model)
    enc = json.loads(meta["encodings"])
    mods = binary_modules(model)
    assert set(enc) == {f"{n}.weight" for n in mods}
    for name, m in mods.items():
        key = f"{name}.weight"
        rows, cols = m.weight.shape
        assert enc[key] == {"bits": 1, "shape": [rows, cols], "dtype": "float32"}
        signs = tensors[f"{key}@signs"]
        assert signs.dtype == torch.uint8 and signs.numel() == math.ceil(rows * cols / 8)
        alpha = tensors[f"{key}@alpha"]
        assert alpha.dtype == torch.float16 and torch.equal(alpha.float(), m.alpha())
        assert key not in tensors and f"{key}_alpha" not in tensors
    # bit i of the row-major flattening is bit i % 8 of byte i // 8, set where the weight is +α
    name = "bert.encoder.layer.0.attention.self.query"
    flat = (model.get_submodule(name).weight > 0).reshape(-1).tolist()
    expect = [sum(1 << b for b in range(8) if flat[8 * i + b]) for i in range(len(flat) // 8)]
    assert tensors[f"{name}.weight@signs"].tolist() == expect
    for k in ("classifier.weight", "bert.embeddings.position_embeddings.weight", "bert.encoder.layer.0.output."
              "LayerNorm.weight", "bert.encoder.layer.0.output.dense.bias"):
        assert tensors[k].dtype == torch.float32  # full precision stays as it is


def test_file_size_is_the_bits_plus_the_unpacked_rest(tmp_path):
    model = _binary("bert")
    path = _saved(tmp_path, model) / BINARY_FILE
    mods = binary_modules(model)
    packed_w = sum(math.ceil(m.weight.numel() / 8) + 2 * m.weight.shape[0] for m in mods.values())
    owned = {f"{n}.weight{s}" for n in mods for s in ("", "_alpha")}
    rest = sum(v.numel() * v.element_size() for k, v in model.state_dict().items() if k not in owned)
    sizes = binary_sizes(model)
    assert sizes["packed_binary"]["total"] == packed_w + rest
    assert sizes["packed_binary"]["file"] == path.stat().st_size
    header = path.stat().st_size - (packed_w + rest)
    assert 0 < header < 16_000  # the JSON header: tensor index + metadata
    fp32_w = sum(4 * m.weight.numel() for m in mods.values())
    assert sizes["fp32"]["total"] == fp32_w + rest
    assert sizes["avg_bits"] == 1.0
    # encoder Linears: 1 bit + an fp16 α per row of 32 or 64 weights (per row of 32: 1.5 bits)
    assert 1.0 < sizes["bits_per_weight"] < 1.5
    assert sizes["ratio"]["encoder"] > 10 and sizes["ratio"]["encoder_linears"] > sizes["ratio"]["encoder"]
    for part in ("encoder_linears", "encoder", "total", "file"):
        assert sizes["ratio"][part] == pytest.approx(sizes["fp32"][part] / sizes["packed_binary"][part])


# ---- saving what cannot be stored ----------------------------------------------------------------

def test_saving_a_dynamic_binary_model_raises(tmp_path):
    model = tiny_model("bert")
    binarize_model(model)
    with pytest.raises(ValueError, match=r"\(BinaryEmbedding\) is not frozen: freeze_binary\(\) first"):
        compresslab.save(model, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    with pytest.raises(ValueError, match="not frozen: freeze_binary"):
        BINARY.encode(model)
    for m in binary_modules(model).values():
        m.freeze()  # the modules frozen, attention still training's (ties 0 stays 0)
    with pytest.raises(ValueError, match="freeze_binary"):
        compresslab.save(model, tmp_path / "ck")
    with pytest.raises(ValueError, match="no binary modules"):
        BINARY.encode(tiny_model("bert"))


def test_writer_refuses_what_it_cannot_store_exactly(tmp_path):
    model = _binary("bert")
    m = model.get_submodule("bert.encoder.layer.0.output.dense")
    with torch.no_grad():
        m.weight_alpha[0] = 0.1  # not a float16 value
    with pytest.raises(ValueError, match="float16-exact"):
        BINARY.encode(model)
    model = _binary("bert")
    with torch.no_grad():
        model.get_submodule("bert.embeddings.word_embeddings").weight[3, 0] *= 1.5
    with pytest.raises(ValueError, match="changed after freeze"):
        BINARY.save(model, tmp_path)
    assert not (tmp_path / BINARY_FILE).exists()


def test_a_stale_stamp_is_cleared_and_a_stamp_follows_the_modules():
    model = tiny_model("bert")
    model.config.__dict__[BINARY_KEY] = {"linears": ["classifier"], "embeddings": [], "attention": "bool",
                                         "frozen": True}
    assert stamp_binary(model) == [] and not hasattr(model.config, BINARY_KEY)
    model = _binary("distilbert")
    stamp = getattr(model.config, BINARY_KEY)
    model.config.__dict__[BINARY_KEY] = {}
    stamp_binary(model)
    assert getattr(model.config, BINARY_KEY) == stamp
    assert isinstance(model.get_submodule(stamp["embeddings"][0]), BinaryEmbedding)
    assert all(isinstance(model.get_submodule(n), BinaryLinear) for n in stamp["linears"])


# ---- loading with a config that does not fit -----------------------------------------------------

@pytest.mark.parametrize("edit, match", [
    ({"hidden_size": 48, "intermediate_size": 96}, r"does not match its config.json.*differ in shape"),
    ({"num_hidden_layers": 1}, r"config.json does not fit the model it builds.*not a module"),
    ({"num_hidden_layers": 3}, r"does not match its config.*missing=\['bert.encoder.layer.2"),
    ({"vocab_size": 80}, r"differ in shape.*word_embeddings"),
])
def test_a_packed_file_with_an_edited_config_raises(tmp_path, edit, match):
    ck = _saved(tmp_path, _binary("bert"))
    _edit_config(ck, **edit)
    with pytest.raises(CheckpointError, match=match):
        compresslab.load(ck)


def test_a_stamp_that_does_not_match_the_file_raises(tmp_path):
    ck = _saved(tmp_path, _binary("bert"))
    good = json.loads((ck / "config.json").read_text())[BINARY_KEY]
    cases = [
        ({**good, "linears": good["linears"] + ["classifier"]}, r"missing=\['classifier.weight_alpha'\]"),
        ({**good, "linears": good["linears"][1:]}, r"unexpected=\['bert.encoder.layer.0.attention.self.query"),
        ({**good, "linears": ["bert.encoder.layer.9.output.dense"]}, "not a module"),
        ({**good, "embeddings": ["bert.embeddings.LayerNorm"]}, "no binarized form"),
        ({**good, "frozen": False}, "dynamic"),
        ({**good, "attention": "relu"}, "attention='relu'"),
    ]
    for stamp, match in cases:
        _edit_config(ck, **{BINARY_KEY: stamp})
        with pytest.raises(CheckpointError, match=match):
            compresslab.load(ck)


# ---- damaged files -------------------------------------------------------------------------------

def test_truncated_corrupt_and_foreign_files_raise_checkpoint_error(tmp_path):
    model = _binary("roberta")
    ck = _saved(tmp_path, model)
    path = ck / BINARY_FILE
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        BINARY.read_state(path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        compresslab.load(ck)

    bad = bytearray(good)
    bad[-5] ^= 0x01  # one flipped bit in the tensor data
    path.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="checksum"):
        compresslab.load(ck)

    tensors, meta = BINARY.encode(model)
    key = next(k for k in tensors if k.endswith("@signs")).split("@")[0]
    for change, match in [({f"{key}@signs": tensors[f"{key}@signs"][:-1]}, "cannot hold exactly"),
                          ({f"{key}@alpha": tensors[f"{key}@alpha"].float()}, "expected float16"),
                          ({f"{key}@alpha": tensors[f"{key}@alpha"][:-1]}, "expected float16")]:
        damaged = dict(tensors, **change)  # a consistent file (checksum fits) whose parts do not
        with pytest.raises(CheckpointError, match=f"cannot decode {key}.*{match}"):
            BINARY.decode(damaged, dict(meta, sha256=_digest(damaged)))
    enc = json.loads(meta["encodings"])
    enc[f"{key}"]["bits"] = 2
    with pytest.raises(CheckpointError, match="1 bit per weight"):
        BINARY.decode(tensors, dict(meta, encodings=json.dumps(enc)))

    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(path), metadata={"format": "compresslab.packed_nbits", "version": "1"})
    with pytest.raises(CheckpointError, match="not a compresslab.packed_binary v1 file"):
        compresslab.load(ck)
