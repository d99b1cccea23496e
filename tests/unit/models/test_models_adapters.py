import pytest
import torch

from compresslab.checkpoint import load, save
from compresslab.models import CheckpointError, UnsupportedArchitectureError, get_adapter
from compresslab.models.structure import layer_structure, shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_adapter_uniform_view(arch):
    m = tiny_model(arch)
    ad = get_adapter(m)
    assert ad.num_layers == 2
    lv = ad.layer(0)
    assert lv.num_heads == 4 and lv.head_size == 8 and lv.ffn_size == 64
    assert lv.q.weight.shape == (32, 32) and lv.o.weight.shape == (32, 32)
    assert lv.ffn_in.weight.shape == (64, 32) and lv.ffn_out.weight.shape == (32, 64)
    names = ad.encoder_linear_names()
    assert len(names) == 12 and all(isinstance(m.get_submodule(n), torch.nn.Linear) for n in names)
    assert ad.embeddings is not None


def test_unsupported_architecture_names_supported():
    from transformers import GPT2Config, GPT2Model

    m = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    with pytest.raises(UnsupportedArchitectureError, match="bert, roberta, distilbert"):
        get_adapter(m)


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return dict(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_zeroed_heads_equal_physically_shrunk(arch):
    """Zeroing a head's Q/K/V rows and O columns == removing it (ALGORITHMS §4.7-4)."""
    m = tiny_model(arch, initializer_range=0.3)
    lv = get_adapter(m).layer(0)
    d = lv.head_size
    with torch.no_grad():
        for h in (1, 3):
            for lin in (lv.q, lv.k, lv.v):
                lin.weight[h * d:(h + 1) * d] = 0
                lin.bias[h * d:(h + 1) * d] = 0
            lv.o.weight[:, h * d:(h + 1) * d] = 0
        ffn = get_adapter(m).layer(1)
        ffn.ffn_out.weight[:, 10:] = 0
    ref = m(**_inputs()).logits
    shrink_heads(get_adapter(m).layer(0), [0, 2])
    shrink_ffn(get_adapter(m).layer(1), range(10))
    assert layer_structure(m) == [{"heads": 2, "ffn": 64}, {"heads": 4, "ffn": 10}]
    torch.testing.assert_close(m(**_inputs()).logits, ref, atol=1e-5, rtol=0)


def test_empty_blocks_contribute_only_bias():
    m = tiny_model("bert", initializer_range=0.3)
    lv = get_adapter(m).layer(1)
    with torch.no_grad():
        lv.o.weight.zero_()
        lv.ffn_out.weight.zero_()
    ref = m(**_inputs()).logits
    shrink_heads(get_adapter(m).layer(1), [])
    shrink_ffn(get_adapter(m).layer(1), [])
    assert layer_structure(m)[1] == {"heads": 0, "ffn": 0}
    torch.testing.assert_close(m(**_inputs()).logits, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_shrunk_model_saves_and_reloads(arch, tmp_path, tiny_tok):
    m = tiny_model(arch)
    shrink_heads(get_adapter(m).layer(0), [1, 2])
    shrink_ffn(get_adapter(m).layer(1), [0, 7, 9])
    ref = m(**_inputs()).logits
    save(m, tmp_path / "ck", tiny_tok)
    m2 = load(tmp_path / "ck")
    assert layer_structure(m2) == layer_structure(m)
    torch.testing.assert_close(m2(**_inputs()).logits, ref)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    save(tiny_model("bert"), tmp_path / "ck")
    w = tmp_path / "ck" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(tmp_path / "ck")


def test_missing_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError):
        load(tmp_path)
    save(tiny_model("bert"), tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load(tmp_path / "ck")


def test_save_is_atomic_and_replaces(tmp_path):
    a, b = tiny_model("bert", seed=0), tiny_model("bert", seed=1)
    save(a, tmp_path / "ck")
    save(b, tmp_path / "ck")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    torch.testing.assert_close(load(tmp_path / "ck").classifier.weight, b.classifier.weight)
