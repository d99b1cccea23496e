"""model.packed.safetensors: n-bit codes at their nominal bits, exact reload, sizes from the file."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from torch import nn

import compresslab
from compresslab.checkpoint.packed import (
    PACKED_FILE, _digest, decode_packed, encode_packed, packed_sizes, read_packed_state, save_packed)
from compresslab.models.loading import CheckpointError
from compresslab.models.tiny import tiny_model
from compresslab.ops.bitpack import pack_bits, pack_nbits, unpack_nbits
from compresslab.ops.quant import QuantParams, dequantize, quant_params, quantize
from compresslab.models.quantized import FakeQuantEmbedding, freeze_all, quantize_modules, quantized_modules
from compresslab.targets import select_modules

BITS = (2, 3, 4, 8)
ROWS = (1, 2, 4)


# ---- bit packing -------------------------------------------------------------------------------

def _oracle_pack(codes: list[int], bits: int) -> list[int]:
    """Bit by bit: code i's bit b is stream bit i*bits + b; stream bit j is bit j%8 of byte j//8."""
    out = [0] * math.ceil(len(codes) * bits / 8)
    for i, c in enumerate(codes):
        for b in range(bits):
            if c >> b & 1:
                j = i * bits + b
                out[j // 8] |= 1 << (j % 8)
    return out


@pytest.mark.parametrize("bits", range(1, 9))
def test_nbits_round_trip_matches_a_bitwise_oracle(bits):
    g = torch.Generator().manual_seed(bits)
    for trial in range(40):  # random lengths, most not a multiple of 8 (nor of 8/bits)
        numel = int(torch.randint(0, 70, (1,), generator=g)) if trial else 0
        codes = torch.randint(0, 1 << bits, (numel,), generator=g, dtype=torch.uint8)
        packed = pack_nbits(codes, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel * bits / 8)
        assert packed.tolist() == _oracle_pack(codes.tolist(), bits)
        assert torch.equal(unpack_nbits(packed, bits, numel), codes)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (3, 5), (13, 24), (2, 3, 7), (1001,)])
def test_nbits_round_trip_is_exact_over_shapes(bits, shape):
    g = torch.Generator().manual_seed(bits * 1000 + len(shape))
    codes = torch.randint(0, 1 << bits, shape, generator=g, dtype=torch.uint8)
    codes.view(-1)[-1] = (1 << bits) - 1  # the last code fills every bit of its field
    packed = pack_nbits(codes, bits)
    assert packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(unpack_nbits(packed, bits, codes.numel()).view(shape), codes)


def test_nbits_layout_is_little_endian_and_dense():
    # 1, 2, 3 at 3 bits: stream 100 010 110 -> byte 0 = 0b11010001 = 209, byte 1 = 0
    assert pack_nbits(torch.tensor([1, 2, 3], dtype=torch.uint8), 3).tolist() == [209, 0]
    assert pack_nbits(torch.tensor([0xA, 0x5], dtype=torch.uint8), 4).tolist() == [0x5A]
    mask = torch.rand(1001, generator=torch.Generator().manual_seed(0)) < 0.4
    assert torch.equal(pack_nbits(mask.to(torch.uint8), 1), pack_bits(mask))
    codes = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(pack_nbits(codes, 8), codes)


def test_nbits_errors():
    with pytest.raises(ValueError, match="does not fit in 3 bits"):
        pack_nbits(torch.tensor([8], dtype=torch.uint8), 3)
    with pytest.raises(ValueError, match="uint8"):
        pack_nbits(torch.tensor([1, 2]), 3)
    for bad in (0, 9, True, 2.0):
        with pytest.raises(ValueError, match=r"\[1, 8\]"):
            pack_nbits(torch.zeros(3, dtype=torch.uint8), bad)
    packed = pack_nbits(torch.full((10,), 5, dtype=torch.uint8), 3)  # 30 bits -> 4 bytes
    with pytest.raises(ValueError, match="expected 4 bytes"):
        unpack_nbits(packed[:3], 3, 10)
    with pytest.raises(ValueError, match="expected"):
        unpack_nbits(packed, 4, 10)  # 40 bits would need 5 bytes
    with pytest.raises(ValueError, match="bits set past"):
        unpack_nbits(packed, 3, 9)  # same 4 bytes, but code 9's bits are not padding
    with pytest.raises(ValueError, match="1-D uint8"):
        unpack_nbits(packed.view(2, 2), 3, 10)


# ---- the packed checkpoint ---------------------------------------------------------------------

def _quantized(seed: int = 0):
    """The tiny BERT with every encoder Linear at bits {2,3,4,8} and row buckets {1,2,4}, block 16, frozen."""
    model = tiny_model("bert", seed=seed)
    names = list(select_modules(model))
    specs = {n: {"bits": BITS[i % 4], "block_size": 16, "group_rows": ROWS[i % 3]} for i, n in enumerate(names)}
    quantize_modules(model, specs)
    freeze_all(model)
    return model.eval(), specs


def _inputs():
    g = torch.Generator().manual_seed(3)
    return {"input_ids": torch.randint(5, 60, (3, 12), generator=g),
            "attention_mask": torch.ones(3, 12, dtype=torch.long)}


def _module_bytes(n: int, k: int, bits: int, block_size: int, group_rows: int) -> int:
    """Codes at ``bits`` bits, one fp16 scale and one ``bits``-bit zero point per group."""
    groups = (n // group_rows) * (k // block_size)
    return math.ceil(n * k * bits / 8) + 2 * groups + math.ceil(groups * bits / 8)


def test_load_from_the_packed_file_alone_is_bit_exact(tmp_path):
    model, specs = _quantized()
    x = _inputs()
    ref = model(**x).logits
    ck = compresslab.save(model, tmp_path / "ck", formats=["packed_nbits"])
    assert (ck / PACKED_FILE).is_file()
    (ck / "model.safetensors").unlink()
    back = compresslab.load(ck, attn_implementation="eager")  # the tiny model runs eager attention
    assert torch.equal(back(**x).logits, ref)
    dense, got = model.state_dict(), back.state_dict()
    assert set(got) == set(dense)
    for k, v in dense.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    qm = quantized_modules(back)
    assert set(qm) == set(specs)
    for name, m in quantized_modules(model).items():
        assert qm[name].spec() == m.spec() and qm[name].frozen
        assert torch.equal(qm[name].codes(), m.codes()), name


def test_file_size_is_the_nbit_accounting(tmp_path):
    from safetensors import safe_open

    model, specs = _quantized()
    path = save_packed(model, tmp_path)
    assert (tmp_path / "config.json").is_file()  # standalone: loadable without compresslab.save
    raw = path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])
    payload = len(raw) - 8 - header_len
    mods = dict(model.named_modules())
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        encodings = json.loads(meta["encodings"])
        nbytes = {k: f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys()}
    assert set(encodings) == {f"{n}.weight" for n in specs}
    expected = 0
    for name, s in specs.items():
        n, k = mods[name].weight.shape
        key = f"{name}.weight"
        assert encodings[key] == {"bits": s["bits"], "block_size": 16, "group_rows": s["group_rows"],
                                  "shape": [n, k], "dtype": "float32"}
        assert nbytes[f"{key}@codes"] == n * k * s["bits"] // 8  # exactly `bits` bits per weight
        assert header[f"{key}@scale"]["dtype"] == "F16"
        got = sum(nbytes[f"{key}@{p}"] for p in ("codes", "scale", "zero"))
        assert got == _module_bytes(n, k, s["bits"], 16, s["group_rows"]), name
        expected += got
    quant_keys = {f"{n}.weight{s}" for n in specs for s in ("", "_scale", "_zero_point")}
    rest = {k: v for k, v in model.state_dict().items() if k not in quant_keys}
    expected += sum(v.numel() * v.element_size() for v in rest.values())
    assert all(nbytes[k] == v.numel() * v.element_size() and header[k]["dtype"] == "F32" for k, v in rest.items())
    assert payload == expected == sum(nbytes.values())

    sizes = packed_sizes(model)
    assert sizes["packed_nbits"]["file"] == len(raw)
    assert sizes["packed_nbits"]["total"] == payload
    assert len(raw) - payload <= 8 + header_len  # the difference is the safetensors header alone
    fp32_total = sum(v.numel() * 4 for v in rest.values()) + sum(mods[n].weight.numel() * 4 for n in specs)
    assert sizes["fp32"]["total"] == fp32_total
    enc_params = sum(p.numel() for n, p in model.named_parameters() if ".encoder.layer." in n)
    assert sizes["fp32"]["encoder"] == 4 * enc_params
    lin_weights = sum(mods[n].weight.numel() for n in specs)
    lin_bias = sum(mods[n].bias.numel() for n in specs)
    assert sizes["fp32"]["encoder_linears"] == 4 * (lin_weights + lin_bias)
    packed_lin = sum(_module_bytes(*mods[n].weight.shape, s["bits"], 16, s["group_rows"]) for n, s in specs.items())
    assert sizes["packed_nbits"]["encoder_linears"] == packed_lin + 4 * lin_bias
    assert sizes["bits_per_weight"] == pytest.approx(8 * packed_lin / lin_weights)
    assert sizes["avg_bits"] == pytest.approx(sum(mods[n].weight.numel() * s["bits"] for n, s in specs.items())
                                              / lin_weights)
    for part in ("encoder_linears", "encoder", "total", "file"):
        assert sizes["ratio"][part] == pytest.approx(sizes["fp32"][part] / sizes["packed_nbits"][part])
    assert sizes["ratio"]["encoder_linears"] > sizes["ratio"]["total"] > 1


def test_a_3bit_module_costs_3_bits_per_weight():
    model = tiny_model("bert")
    name = "bert.encoder.layer.0.intermediate.dense"  # (64, 32)
    quantize_modules(model, {name: {"bits": 3, "block_size": 32}})
    freeze_all(model)
    tensors, _ = encode_packed(model)
    assert tensors[f"{name}.weight@codes"].numel() == 64 * 32 * 3 // 8  # 768 bytes, not 1024 (4-bit) or 2048
    assert tensors[f"{name}.weight@zero"].numel() == math.ceil(64 * 3 / 8)
    assert tensors[f"{name}.weight@scale"].dtype == torch.float16


class _FrozenTable(nn.Module):
    """Any frozen module exposing codes() and params() packs (e.g. a quantized embedding table)."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.randn(10, 32)
        p = quant_params(w, 5, 16, 2)
        self.weight = nn.Parameter(dequantize(quantize(w, p), p))
        self.register_buffer("weight_scale", p.scale)
        self.register_buffer("weight_zero_point", p.zero_point)
        self.frozen, self.p = True, p

    def params(self) -> QuantParams:
        return QuantParams(self.weight_scale, self.weight_zero_point, 5, 16, 2)

    def codes(self) -> torch.Tensor:
        return quantize(self.weight, self.params())


def test_generic_over_modules_with_codes_and_params():
    model = nn.Sequential(_FrozenTable(), nn.LayerNorm(32))
    tensors, meta = encode_packed(model)
    assert tensors["0.weight@codes"].numel() == math.ceil(10 * 32 * 5 / 8)
    state = decode_packed(tensors, meta)
    for k, v in model.state_dict().items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def test_a_quantized_word_embedding_packs_and_reloads(tmp_path):
    model = tiny_model("bert")
    emb = "bert.embeddings.word_embeddings"  # (64, 32)
    quantize_modules(model, {emb: {"bits": 3, "block_size": 16, "group_rows": 2},
                             "bert.encoder.layer.0.output.dense": {"bits": 2, "block_size": 16}})
    freeze_all(model)
    x = _inputs()
    ref = model(**x).logits
    ck = compresslab.save(model, tmp_path / "ck", formats=["packed_nbits"])
    (ck / "model.safetensors").unlink()
    tensors, _ = encode_packed(model)
    assert tensors[f"{emb}.weight@codes"].numel() == 64 * 32 * 3 // 8
    back = compresslab.load(ck, attn_implementation="eager")
    assert isinstance(back.get_submodule(emb), FakeQuantEmbedding)
    assert torch.equal(back(**x).logits, ref)


def test_writer_refuses_what_it_cannot_store_exactly(tmp_path):
    with pytest.raises(ValueError, match="no frozen quantized modules"):
        encode_packed(tiny_model("bert"))
    model = tiny_model("bert")
    quantize_modules(model, {"bert.encoder.layer.0.output.dense": {"bits": 4, "block_size": 16}})
    with pytest.raises(ValueError, match="not frozen"):
        encode_packed(model)
    freeze_all(model)
    m = model.get_submodule("bert.encoder.layer.0.output.dense")
    with torch.no_grad():
        m.weight_scale[0, 0] = 0.1  # not a float16 value
    with pytest.raises(ValueError, match="float16-exact"):
        encode_packed(model)
    model, _ = _quantized()
    with torch.no_grad():
        model.get_submodule("bert.encoder.layer.1.output.dense").weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="changed after freeze"):
        save_packed(model, tmp_path)
    assert not (tmp_path / PACKED_FILE).exists()


def test_truncated_corrupt_and_foreign_files_raise_checkpoint_error(tmp_path):
    model, _ = _quantized()
    ck = compresslab.save(model, tmp_path / "ck", formats=["packed_nbits"])
    (ck / "model.safetensors").unlink()
    path = ck / PACKED_FILE
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_packed_state(path)
    with pytest.raises(CheckpointError):
        compresslab.load(ck)

    bad = bytearray(good)
    bad[-3] ^= 0x10  # one flipped bit in the tensor data
    path.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="checksum"):
        read_packed_state(path)
    with pytest.raises(CheckpointError, match="checksum"):
        compresslab.load(ck)

    tensors, meta = encode_packed(model)
    key = next(k for k in tensors if k.endswith("@codes"))
    short = dict(tensors, **{key: tensors[key][:-1]})
    with pytest.raises(CheckpointError, match=f"cannot decode {key.split('@')[0]}"):
        decode_packed(short, dict(meta, sha256=_digest(short)))  # a consistent file with a short stream

    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a compresslab.packed_nbits"):
        read_packed_state(path)
