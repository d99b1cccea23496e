"""``hessian.loss=teacher_kl``: the Hessian of KL(own output ‖ model) is the Gauss-Newton matrix.

Checked on tiny float64 softmax models: the trace against the closed form of a linear-softmax model
(Σ_n ‖x_n‖² Σ_c p_nc(1 − p_nc) / B), the dense Hessian against Jᵀ(diag(p) − ppᵀ)J built from the
Jacobian, positive semi-definiteness (the task loss's Hessian, which the test also builds, is not),
and the Hutchinson block traces against the dense blocks within their standard error.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from compresslab.quant.sensitivity import linear_traces
from compresslab.training.losses import task_loss, teacher_kl_loss


class _Softmax(nn.Module):
    """Features in ``input_ids`` (B, d) -> logits (B, C): one Linear, or Linear-tanh-Linear."""

    def __init__(self, d: int, c: int, hidden: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(d, hidden) if hidden else None
        self.head = nn.Linear(hidden or d, c)
        with torch.no_grad():
            self.head.weight.mul_(3.0)  # confident-ish predictions: p far from uniform

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                return_dict: bool = True) -> SimpleNamespace:
        x = input_ids if self.fc is None else torch.tanh(self.fc(input_ids))
        return SimpleNamespace(logits=self.head(x))


def _batch(b: int, d: int, c: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randn(b, d, generator=g, dtype=torch.float64),
            "labels": torch.randint(0, c, (b,), generator=g)}


def _names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _flat_fn(model: nn.Module, names: list[str]):
    """(flat weights, f(flat) -> module outputs with those weights): for dense Hessians and Jacobians."""
    mods = dict(model.named_modules())
    ws = [mods[n].weight.detach() for n in names]
    shapes, sizes = [w.shape for w in ws], [w.numel() for w in ws]

    def call(flat: torch.Tensor, batch: dict, loss) -> torch.Tensor:
        ps = {f"{n}.weight": c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes)}
        return loss(lambda **kw: torch.func.functional_call(model, ps, (), kw), batch)

    return torch.cat([w.reshape(-1) for w in ws]), call, sizes


def _ggn(model: nn.Module, names: list[str], batch: dict) -> torch.Tensor:
    """(1/B) Σ_n J_nᵀ (diag(p_n) − p_n p_nᵀ) J_n over the weights of ``names`` (dense, float64)."""
    flat, call, _ = _flat_fn(model, names)
    jac = torch.autograd.functional.jacobian(lambda f: call(f, batch, lambda m, b: m(input_ids=b["input_ids"]).logits),
                                             flat)  # (B, C, P)
    with torch.no_grad():
        p = torch.softmax(model(input_ids=batch["input_ids"]).logits, -1)
    m = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (B, C, C)
    return torch.einsum("bcp,bcd,bdq->pq", jac, m, jac) / p.shape[0]


def _dense(model: nn.Module, names: list[str], batch: dict, loss) -> torch.Tensor:
    flat, call, _ = _flat_fn(model, names)
    return torch.autograd.functional.hessian(lambda f: call(f, batch, loss), flat)


def _traces(model, batch, names, probes: int, seed: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 1e-9 relative SE is never met: non-convergence is expected here
        return linear_traces(model, [batch], names, probes_per_batch=probes, max_batches=1, min_probes=probes,
                             rel_se_tol=1e-9, seed=seed, loss_fn=teacher_kl_loss)


def test_value_and_gradient_are_zero_at_the_model_itself() -> None:
    model = _Softmax(5, 3, hidden=4).double()
    batch = _batch(6, 5, 3)
    loss = teacher_kl_loss(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert abs(loss.item()) < 1e-12 and all(g.abs().max() < 1e-12 for g in grads)


def test_linear_softmax_trace_equals_the_closed_form_ggn_trace() -> None:
    model = _Softmax(5, 3).double()
    batch = _batch(8, 5, 3)
    with torch.no_grad():
        p = torch.softmax(model(input_ids=batch["input_ids"]).logits, -1)
    # J_n of the logits in vec(W) is I_C ⊗ x_nᵀ, so tr(J_nᵀ M_n J_n) = ‖x_n‖² · tr(M_n)
    exact = ((batch["input_ids"] ** 2).sum(1) * (p * (1 - p)).sum(1)).mean().item()
    assert torch.trace(_ggn(model, ["head"], batch)).item() == pytest.approx(exact, rel=1e-10)
    t = _traces(model, batch, ["head"], probes=2000).traces["head"]
    assert abs(t.trace - exact) <= 4 * t.se, (t, exact)
    assert t.se < 0.05 * exact  # the estimate is informative, not just within a wide error bar


def test_dense_hessian_is_the_gauss_newton_matrix_and_psd_unlike_the_task_hessian() -> None:
    model = _Softmax(4, 3, hidden=5).double()
    names = _names(model)
    batch = _batch(7, 4, 3)
    h = _dense(model, names, batch, teacher_kl_loss)
    g = _ggn(model, names, batch)
    assert torch.allclose(h, g, atol=1e-10, rtol=1e-8)
    assert torch.linalg.eigvalsh(h).min().item() >= -1e-10
    task = _dense(model, names, batch, task_loss)
    assert not torch.allclose(task, g, atol=1e-6)  # the residual term Σ_c (p_c − y_c)∇²z_c is there
    assert torch.linalg.eigvalsh(task).min().item() < -1e-6  # and makes the task Hessian indefinite


def test_hutchinson_block_traces_match_the_dense_blocks_and_are_nonnegative() -> None:
    model = _Softmax(4, 3, hidden=5).double()
    names = _names(model)
    batch = _batch(7, 4, 3)
    h = _ggn(model, names, batch)
    res = _traces(model, batch, names, probes=3000, seed=2)
    i = 0
    for n in names:
        k = dict(model.named_modules())[n].weight.numel()
        exact = torch.trace(h[i:i + k, i:i + k]).item()
        i += k
        t = res.traces[n]
        assert exact > 0 and abs(t.trace - exact) <= 4 * t.se, (n, t, exact)
        assert t.trace >= -2 * t.se  # PSD: a negative estimate can only be probe noise


def test_one_output_is_mse_to_itself_with_hessian_2_jtj() -> None:
    model = _Softmax(5, 1).double()
    batch = _batch(6, 5, 1)
    h = _dense(model, ["head"], batch, teacher_kl_loss)
    x = batch["input_ids"]
    assert torch.allclose(h, 2 * x.T @ x / x.shape[0], atol=1e-12)


# ---------------------------------------------------------------- fisher_traces: the exact GGN block traces

def _bert_batches(n: int, batch: int = 4, seq: int = 10, labels: int = 2) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[0, seq - 4:] = 0  # a padded row: its pad positions must add nothing
        out.append({"input_ids": torch.randint(5, 60, (batch, seq), generator=g), "attention_mask": mask,
                    "labels": torch.randint(0, labels, (batch,), generator=g)})
    return out


@pytest.mark.parametrize("labels", [2, 3, 1])
def test_fisher_traces_equal_the_dense_teacher_kl_hessian_blocks(labels: int) -> None:
    from compresslab.models.adapters import get_adapter
    from compresslab.models.tiny import tiny_model
    from compresslab.quant.sensitivity import fisher_traces

    model = tiny_model(hidden_size=8, num_attention_heads=2, intermediate_size=8, num_labels=labels).double()
    names = get_adapter(model).encoder_linear_names()[6:] + ["classifier"]  # layer 1 and the (pooled) head
    batches = _bert_batches(2)

    def dense(batch):
        def hf_loss(f, b):  # functional_call hands the model's kwargs through; teacher_kl_loss picks inputs
            return teacher_kl_loss(f, b)
        return _dense(model, names, batch, hf_loss)

    hs = [dense(b) for b in batches]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fisher_traces(model, batches, names, max_batches=2, rel_se_tol=0.1)
    assert res.batches == 2 and res.probes == 2 * (1 if labels <= 2 else labels - 1)
    mods = dict(model.named_modules())
    i = 0
    for n in names:
        k = mods[n].weight.numel()
        per_batch = [torch.trace(h[i:i + k, i:i + k]).item() for h in hs]
        i += k
        exact = sum(per_batch) / 2
        assert exact > 0 and res.traces[n].trace == pytest.approx(exact, rel=1e-8, abs=1e-14), n
        # the standard error is the spread of the two batches' exact traces
        assert res.traces[n].se == pytest.approx(abs(per_batch[0] - per_batch[1]) / 2, rel=1e-6, abs=1e-14)


def test_fisher_traces_are_deterministic_and_leave_the_model_as_found() -> None:
    from compresslab.models.tiny import tiny_model
    from compresslab.quant.sensitivity import fisher_traces

    model = tiny_model()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = fisher_traces(model, _bert_batches(3), names, max_batches=3).to_dict()
        b = fisher_traces(model, _bert_batches(3), names, max_batches=3).to_dict()
    strip = lambda d: {k: v for k, v in d.items() if k not in ("wall_s", "peak_mb")}  # noqa: E731
    assert strip(a) == strip(b) and a["batches"] == 3
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    with pytest.raises(ValueError, match="max_batches"):
        fisher_traces(model, _bert_batches(1), names, max_batches=0)
    with pytest.raises(ValueError, match="not Linear"):
        fisher_traces(model, _bert_batches(1), ["bert.embeddings"], max_batches=1)
