"""compresslab/quant/hvp.py: ``batch_hvps`` (the public entry benchmarks/hessian_sensitivity.py probes) gives the
dense Hessian's products, the same numbers as the graph + product-function pair the sensitivity measures use,
and leaves the model as it found it."""

from __future__ import annotations

import torch

from compresslab.models.adapters import get_adapter
from compresslab.models.tiny import tiny_model
from compresslab.quant.hvp import batch_hvps, gradient_graph, hessian_mode, hvp_fn
from compresslab.training.losses import task_loss


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[0, 7:] = 0
    return {"input_ids": torch.randint(5, 60, (4, 10), generator=g), "attention_mask": mask,
            "labels": torch.randint(0, 2, (4,), generator=g)}


def test_batch_hvps_are_the_dense_hessians_products_and_the_models_state_is_restored() -> None:
    model = tiny_model(hidden_size=8, num_attention_heads=2, intermediate_size=8).double()
    mods = dict(model.named_modules())
    names = get_adapter(model).encoder_linear_names()[6:8]
    params = [mods[n].weight for n in names]
    flags = [p.requires_grad for p in model.parameters()]
    batch = _batch()
    vecs = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
            for i, p in enumerate(params)]

    with batch_hvps(model, params) as hvps:
        out = hvps(batch, task_loss)(vecs)
    with hessian_mode(model, params):  # what the sensitivity measures run: the same numbers
        ref = hvp_fn(gradient_graph(model, batch, params, task_loss), params)(vecs)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    ws, sizes = [p.detach() for p in params], [p.numel() for p in params]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        ps = {f"{n}.weight": c.reshape(w.shape) for n, c, w in zip(names, flat.split(sizes), ws)}
        return task_loss(lambda **kw: torch.func.functional_call(model, ps, (), kw), batch)  # type: ignore[arg-type]

    model.eval()  # hessian_mode's mode (no dropout) for the dense reference too
    h = torch.autograd.functional.hessian(loss_of, torch.cat([w.reshape(-1) for w in ws]))
    dense = h @ torch.cat([v.reshape(-1) for v in vecs])
    torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]), dense, rtol=1e-6, atol=1e-9)
    assert [p.requires_grad for p in model.parameters()] == flags  # every flag restored
