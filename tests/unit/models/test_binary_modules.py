"""BiBERT's module swap (models/binary.py): which modules become binary, bad input, freezing, gradients."""

import copy

import pytest
import torch
from torch import nn

from compresslab.models.adapters import UnsupportedArchitectureError
from compresslab.models.binary import (
    BI_ATTENTION, BINARY_KEY, BinaryEmbedding, BinaryLinear, binarize_model, binary_modules, freeze_binary)
from compresslab.models.tiny import tiny_model

ARCHS = ["bert", "roberta", "distilbert"]
BASE = {"bert": "bert", "roberta": "roberta", "distilbert": "distilbert"}
ENCODER = {"bert": "bert.encoder.", "roberta": "roberta.encoder.", "distilbert": "distilbert.transformer."}
FULL_PRECISION_HEADS = {"bert": ["classifier"], "roberta": ["classifier.dense", "classifier.out_proj"],
                        "distilbert": ["pre_classifier", "classifier"]}


def _batch(b=4, t=9, seed=0, pad_from=6):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 64, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, pad_from:] = 0
    ids[0, pad_from:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(b) % 2}


def _inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask")}


# ------------------------------------------------------------------------------- the swap
@pytest.mark.parametrize("arch", ARCHS)
def test_binarize_model_swaps_encoder_linears_pooler_and_word_embeddings(arch):
    m = tiny_model(arch)
    before = {n: type(mod) for n, mod in m.named_modules()}
    weights = {n: p.detach().clone() for n, p in m.named_parameters()}
    stamp = binarize_model(m)
    base = BASE[arch]
    encoder_linears = {n for n, t in before.items() if t is nn.Linear and n.startswith(ENCODER[arch])}
    assert len(encoder_linears) == 2 * 6
    pooler = {f"{base}.pooler.dense"} if arch == "bert" else set()  # RoBERTa's classification model has none
    expected_linears = encoder_linears | pooler
    expected_emb = {f"{base}.embeddings.word_embeddings"}
    got = binary_modules(m)
    assert set(got) == expected_linears | expected_emb
    assert all(type(got[n]) is BinaryLinear for n in expected_linears)
    assert all(type(got[n]) is BinaryEmbedding for n in expected_emb)
    assert set(stamp["linears"]) == expected_linears and stamp["embeddings"] == sorted(expected_emb)
    assert stamp["attention"] == "bool" and getattr(m.config, BINARY_KEY) == stamp
    # full precision stays full precision: the classifier head, position and token-type embeddings, LayerNorms
    mods = dict(m.named_modules())
    for n in FULL_PRECISION_HEADS[arch]:
        assert type(mods[n]) is nn.Linear, n
    for n in (f"{base}.embeddings.position_embeddings", f"{base}.embeddings.token_type_embeddings"):
        if n in before:
            assert type(mods[n]) is nn.Embedding, n
    assert all(type(mods[n]) is nn.LayerNorm for n, t in before.items() if t is nn.LayerNorm)
    # the latent weights are the original ones (the student starts from the teacher)
    for n, p in m.named_parameters():
        assert torch.equal(p, weights[n]), n
    # every layer runs Bi-Attention
    assert m.config._attn_implementation == BI_ATTENTION
    from compresslab.models.adapters import get_adapter
    assert all(lv.self_attn.binary_attention == "bool" for lv in get_adapter(m).layers())


@pytest.mark.parametrize("arch", ARCHS)
def test_binarized_model_attention_is_binary_and_zero_on_padding(arch):
    m = tiny_model(arch)
    binarize_model(m)
    batch = _batch()
    with torch.no_grad():
        out = m(**_inputs(batch), output_attentions=True)
    assert torch.isfinite(out.logits).all()
    for a in out.attentions:
        assert set(a.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(a[0, :, :, 6:], torch.zeros_like(a[0, :, :, 6:]))  # the padded keys
        assert 0.2 < a[1:].mean().item() < 0.8


def test_softmax_attention_mode_for_the_ablation():
    m = tiny_model("bert")
    binarize_model(m, attention="softmax")
    with torch.no_grad():
        out = m(**_inputs(_batch()), output_attentions=True)
    a = out.attentions[0]
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    assert (a[0, :, :, 6:] < 1e-6).all()


def test_binarize_model_without_pooler_and_embeddings():
    from compresslab.models.binary import default_targets

    m = tiny_model("bert")
    binarize_model(m, **default_targets(m, embeddings=False, pooler=False))
    names = set(binary_modules(m))
    assert "bert.pooler.dense" not in names and "bert.embeddings.word_embeddings" not in names
    assert len(names) == 12


# ------------------------------------------------------------------------------- bad input
def _no_swap(m):
    assert not binary_modules(m)
    assert BINARY_KEY not in m.config.__dict__


def test_a_module_without_a_binarized_form_is_an_error():
    m = tiny_model("bert")
    with pytest.raises(ValueError, match="LayerNorm, which has no binarized form"):
        binarize_model(m, linears=["bert.encoder.layer.0.attention.self.query",
                                   "bert.encoder.layer.0.attention.output.LayerNorm"])
    _no_swap(m)  # nothing is swapped before the check
    m.conv = nn.Conv1d(4, 4, 3)
    with pytest.raises(ValueError, match="Conv1d, which has no binarized form"):
        binarize_model(m, linears=["conv"])
    with pytest.raises(ValueError, match="Linear, which has no binarized form"):
        binarize_model(m, embeddings=["classifier"])  # a Linear is not an embedding table
    with pytest.raises(ValueError, match="is not a module"):
        binarize_model(m, linears=["bert.encoder.layer.9.output.dense"])
    with pytest.raises(ValueError, match="attention"):
        binarize_model(m, attention="sparsemax")
    _no_swap(m)


def test_an_unsupported_architecture_is_an_error():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    m = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=16))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        binarize_model(m)
    assert not binary_modules(m)


def test_binarizing_twice_is_an_error():
    m = tiny_model("bert")
    binarize_model(m)
    with pytest.raises(ValueError, match="already binarized"):
        binarize_model(m)


def test_embedding_options_without_a_binarized_form():
    emb = nn.Embedding(10, 4, max_norm=1.0)
    with pytest.raises(ValueError, match="max_norm"):
        BinaryEmbedding.from_embedding(emb, "emb")


# ------------------------------------------------------------------------------- freezing
@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_binary_weights_are_plus_minus_fp16_exact_alpha(arch):
    m = tiny_model(arch)
    binarize_model(m)
    latent = {n: mod.weight.detach().clone() for n, mod in binary_modules(m).items()}
    for mod in binary_modules(m).values():
        with pytest.raises(RuntimeError, match="frozen"):
            mod.alpha()
    freeze_binary(m)
    for n, mod in binary_modules(m).items():
        w, alpha = mod.weight.detach(), mod.alpha()
        assert mod.frozen and mod.ties == "plus"
        assert torch.equal(alpha, alpha.half().float())  # stored exactly in a float16 scale
        torch.testing.assert_close(alpha, latent[n].abs().mean(-1), rtol=2 ** -11, atol=1e-12)
        centred = latent[n] - latent[n].mean(-1, keepdim=True)
        signs = torch.where(centred >= 0, 1.0, -1.0)  # ties -> +1
        assert torch.equal(w, alpha[:, None] * signs), n
        assert torch.equal(mod.signs(), (alpha[:, None] * signs) > 0)
    from compresslab.models.adapters import get_adapter
    assert all(lv.self_attn.binary_ties == "plus" for lv in get_adapter(m).layers())
    assert getattr(m.config, BINARY_KEY)["frozen"] is True
    frozen = {n: mod.weight.detach().clone() for n, mod in binary_modules(m).items()}
    freeze_binary(m)  # idempotent
    assert all(torch.equal(mod.weight, frozen[n]) for n, mod in binary_modules(m).items())


def _snap_to_fp16_binary(m):
    """Make every latent binary weight row a_r·s_r with a_r float16-exact and s_r mixed ±1, so that
    freezing changes nothing but the sign-tie rule (the tiny widths are powers of 2: means are exact)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in binary_modules(m).values():
            w = mod.weight
            a = w.abs().mean(-1, keepdim=True).half().float()
            s = torch.where(torch.rand(w.shape, generator=g) < 0.5, 1.0, -1.0)
            s[:, 0], s[:, 1] = 1.0, -1.0  # never a constant row
            w.copy_(a * s)


def _ties_plus(m):
    """The dynamic model with the deployment tie rule, sign(0) = +1, everywhere (weights, activations, Q/K/V)."""
    from compresslab.models.adapters import get_adapter

    for mod in binary_modules(m).values():
        mod.ties = "plus"
    for lv in get_adapter(m).layers():
        lv.self_attn.binary_ties = "plus"
    return m


def _zero_activations(m, inputs):
    """Fraction of exact zeros (sign ties) in the input of each binary Linear."""
    from compresslab.models.hooks import capture_inputs

    got = {}
    lin = {n: mod for n, mod in binary_modules(m).items() if isinstance(mod, BinaryLinear)}
    with torch.no_grad(), capture_inputs(lin, lambda n, args: got.__setitem__(n, (args[0] == 0).float().mean().item())):
        m(**inputs)
    return got


@pytest.mark.parametrize("arch", ARCHS)
def test_frozen_predictions_equal_the_dynamic_model_except_at_ties(arch):
    m = tiny_model(arch)
    binarize_model(m)
    _snap_to_fp16_binary(m)
    m.eval()
    inputs = _inputs(_batch(b=8, t=12))
    frozen_m = copy.deepcopy(m)
    freeze_binary(frozen_m)
    with torch.no_grad():
        fro = frozen_m(**inputs).logits
        dyn = m(**inputs).logits
        dyn_plus = _ties_plus(copy.deepcopy(m))(**inputs).logits
    # the same weights and the same tie rule: bit for bit equal
    assert torch.equal(dyn_plus, fro)
    # the training rule sign(0) = 0 is what differs: A·sign(V) is integer-valued, so the attention
    # output projection sees exact zeros often (ALGORITHMS §3.6 "zero handling")
    ties = _zero_activations(m, inputs)
    o_proj = [n for n in ties if n.endswith(("attention.output.dense", "attention.out_lin"))]
    assert len(o_proj) == 2 and all(ties[n] > 0.05 for n in o_proj)
    assert not torch.equal(dyn, fro)


def test_ties_are_where_dynamic_and_frozen_differ():
    m = tiny_model("bert")
    binarize_model(m, linears=["bert.encoder.layer.0.intermediate.dense"], embeddings=[])
    _snap_to_fp16_binary(m)
    lin = binary_modules(m)["bert.encoder.layer.0.intermediate.dense"]
    with torch.no_grad():
        lin.weight[3] = 0.25  # a constant row: every entry is an exact tie (W − μ = 0)
    x = torch.randn(2, 5, lin.in_features)
    x[0, 0, 0] = 0.0  # an activation tie
    with torch.no_grad():
        dyn = lin(x)
        lin.freeze()
        fro = lin(x)
    # training ties: weight row 3 is 0; deployment ties: it is +α = 0.25, and sign(0) = +1
    assert torch.equal(dyn[..., 3], lin.bias[3].expand(2, 5))
    assert not torch.equal(fro[..., 3], dyn[..., 3])
    other = [r for r in range(lin.out_features) if r != 3]
    assert torch.equal(fro[1][..., other], dyn[1][..., other])  # no tie in batch row 1
    assert not torch.equal(fro[0, 0, other], dyn[0, 0, other])  # the activation tie at (0, 0, 0)


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("arch", ARCHS)
def test_training_gradient_reaches_every_binarized_weight(arch):
    m = tiny_model(arch)
    binarize_model(m)
    m.train()
    batch = _batch(b=8, t=10, seed=4)
    out = m(**_inputs(batch), labels=batch["labels"])
    out.loss.backward()
    for n, mod in binary_modules(m).items():
        g = mod.weight.grad
        assert g is not None and torch.isfinite(g).all(), n
        if isinstance(mod, BinaryEmbedding):  # the rows of the tokens at unpadded positions
            used = batch["input_ids"][batch["attention_mask"].bool()].unique()
            assert (g[used].abs().sum(-1) > 0).all(), n
        else:
            assert (g.abs().sum(-1) > 0).float().mean() > 0.9, n  # nearly every row learns
