"""``hawq``: Hessian-aware mixed-precision weight quantization (Q-BERT, HAWQ-V2/V3; ALGORITHMS.md §1).

sensitivity per targeted Linear (HAWQ-V2: average Hessian trace by Hutchinson, one shared Rademacher
probe over all Linears per HVP; or Q-BERT: top eigenvalue per encoder layer by power iteration)
-> bits per Linear from ``choices`` (HAWQ-V3's integer program over Σ Ω_i · ‖Q_b(W_i) − W_i‖² under an
average-bits, size and/or latency budget; Q-BERT's rank rule; a random map at the same budget as the
control; or one uniform width; in every mode ``rules`` {pattern: width} pin chosen Linears, counted in the
budget) -> dynamic ``FakeQuantLinear`` swap -> QAT with KD through ``training.recover``
(straight-through estimator, ranges recomputed every forward: Q-BERT's dynamic ranges) -> frozen
(weights become ``ŵ``; scales and integer zero points become buffers, the layout ONNX Runtime's
MatMulNBits takes: the ``ort_matmul_nbits`` pass writes it).

The math lives in ``ops/quant.py`` (quantizer), ``ops/loss_hessian.py`` + ``quant/sensitivity.py``
(Hessian statistics over train batches, eval mode, eager attention, fp32), ``quant/allocate.py``
+ ``ops/knapsack.solve_milp`` (allocation) and ``bench/nbits_latency.py`` (the latency table of the
deployed MatMulNBits per Linear and width, measured on this machine, for ``latency_limit``). The
settings, their validation and the budget checks made before the Hessian are ``quant/hawq_settings.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

from torch import nn

from compresslab.models.quantized import average_bits, freeze_all, quantize_modules
from compresslab.ops.quant import check_group, quant_error
from compresslab.quant.hawq_settings import (FP32, RANDOM_TOL, Allocate, HawqSettings, HessianEstimator, HessianLoss,
                                             HessianSettings, Sensitivity)
from compresslab.registry import register_pass
from compresslab.targets import layer_keys, select_modules
from compresslab.training.recovery import recover
from compresslab.types import PassContext, PassResult, Stage

log = logging.getLogger(__name__)

QAT_CHECKPOINT_EVERY = 200  # optimizer steps between QAT checkpoints (~1-2 s each on MiniLM)


@register_pass("hawq")
@dataclass
class Hawq(HawqSettings):
    """Mixed-precision (or uniform) n-bit weights for the targeted Linears, then QAT with KD.

    The settings, their validation and the budget checks before the Hessian are
    :class:`~compresslab.quant.hawq_settings.HawqSettings` (documented there); this adds the
    pipeline hooks and ``apply``: sensitivity, allocation, the fake-quant swap and QAT."""

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    quantizes_weights: ClassVar[bool] = True  # frozen n-bit weights: what ort_matmul_nbits deploys
    name: ClassVar[str]
    # settings added after runs were made, with the value those runs had (types.PASS_FLAGS): rules (2026-12)
    identity_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({"rules": None})

    # ------------------------------------------------------------------ checks against the run
    def check_model(self, model: nn.Module) -> None:
        """Checks against the model before any step runs (called with the loaded model when only
        shape-preserving steps come before this one): ``targets`` / ``ignore`` select Linears, every
        group fits its weight (``block_size`` divides the input dimension) and ``rules`` pin targeted Linears
        without conflicts (two patterns, or a Q/K/V group under ``couple_qkv``, giving one Linear two widths),
        ValueError naming them; and, when the
        sensitivity takes Hessian-vector products, one tiny double backward (DoubleBackwardError naming the
        attention implementation that has none)."""
        try:
            modules = select_modules(model, self.targets, self.ignore)
            for n, m in modules.items():
                check_group(m.weight.shape, *self.group_shape(model, m), name=n)
        except ValueError as e:
            raise ValueError(f"hawq: {e}") from None
        self._pins(model, modules)
        self._check_eigen_targets(model, modules)
        if self._uses_hvp() and modules:  # a fused or custom attention without a double backward: refused now
            from compresslab.quant.sensitivity import check_double_backward

            check_double_backward(model, list(modules))

    def _check_eigen_targets(self, model: nn.Module, modules: Mapping[str, nn.Module]) -> None:
        """Q-BERT's eigenvalues are per encoder layer (its q..ffn_out Linears together): a targeted Linear outside
        every layer (the pooler, the classifier) has none. ValueError naming them, before the power iteration."""
        if self.sensitivity is not Sensitivity.EIGEN or self.bits is not None or self.allocate is Allocate.RANDOM:
            return
        from compresslab.models.adapters import get_adapter
        from compresslab.quant.sensitivity import LAYER_ROLES

        covered = {lv.names[r] for lv in get_adapter(model).layers() for r in LAYER_ROLES if getattr(lv, r) is not None}
        missing = [n for n in modules if n not in covered]
        if missing:
            raise ValueError(f"hawq: sensitivity=eigen covers the encoder layers' Linears only; {missing[:3]} are "
                             "outside them (use sensitivity=trace, or ignore= them)")

    def _uses_hvp(self) -> bool:
        """Whether the sensitivity takes Hessian-vector products (double backprop): the Hutchinson trace and the
        eigenvalues do; the exact Fisher trace and fixed or random bits do not."""
        if self.bits is not None or self.allocate is Allocate.RANDOM:
            return False
        return not (self.sensitivity is Sensitivity.TRACE and self.hessian.estimator is HessianEstimator.EXACT)

    def _pins(self, model: nn.Module, modules: Mapping[str, nn.Linear]) -> tuple[list[list[str]], dict[str, int]]:
        """The Q/K/V groups under ``couple_qkv`` ([] otherwise; targeted members, two or more) and the widths
        ``rules`` pins (name -> width, model order), spread over those groups (``quant.allocate.expand_pins``).
        ValueError prefixed ``hawq:`` for a bad pattern or a conflict."""
        from compresslab.quant.allocate import expand_pins, qkv_groups

        couple = [[n for n in g if n in modules] for g in qkv_groups(model)] if self.couple_qkv else []
        couple = [g for g in couple if len(g) > 1]
        try:
            pins = expand_pins(self.rule_widths(model, modules), list(modules), couple,
                               self.choices if self.bits is None else None)
        except ValueError as e:
            raise ValueError(e.args[0] if str(e).startswith("hawq:") else f"hawq: rules: {e}") from None
        return couple, pins

    def check(self, task: Any) -> None:
        """The Hessian and QAT need a labelled train split (and QAT selecting on validation, that split)."""
        from compresslab.data.schema import TaskKind, TaskNotSupportedError

        self.recovery.check_task(task)
        needs_data = self.bits is None and self.allocate is not Allocate.RANDOM
        if needs_data and task.spec.kind is TaskKind.EMBEDDING:
            raise TaskNotSupportedError(f"hawq's Hessian needs a task loss; {task.spec.name!r} is an embedding "
                                        "task (set bits= for uniform quantization)")
        if needs_data:
            n = len(task.require_train())
            if n < self.hessian.batch_size:
                raise ValueError(f"hessian.batch_size={self.hessian.batch_size} exceeds the train split ({n} "
                                 f"examples); set hessian.batch_size<={n}")

    # ------------------------------------------------------------------ apply
    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        modules = select_modules(model, self.targets, self.ignore)
        shapes = {n: self.group_shape(model, m) for n, m in modules.items()}
        for n, m in modules.items():  # every shape problem before the Hessian
            check_group(m.weight.shape, *shapes[n], name=n)
        embedding = self._embedding_spec(model)
        self.check(ctx.task)
        from compresslab.data.schema import TaskKind

        is_embedding = ctx.task.spec.kind is TaskKind.EMBEDDING
        teacher = ctx.kd_teacher(model) if self.recovery.needs_teacher(is_embedding) else None
        metrics: dict[str, Any] = {"group": self.group.value, "block_size": self.block_size}
        if self.bits is not None:  # one width, except where rules pin another
            _, pins = self._pins(model, modules)
            bits = {n: pins.get(n, self.bits) for n in modules}
            metrics["allocation"] = {"method": "uniform", "pinned": pins}
        else:
            bits, record = self._allocate(model, ctx, modules, shapes)
            metrics.update(record)
        specs = {n: {"bits": b, "block_size": shapes[n][0], "group_rows": shapes[n][1]}
                 for n, b in bits.items() if b != FP32}
        quantize_modules(model, {**specs, **embedding})
        if self.recovery.steps:
            # step-level checkpoints: a stopped QAT resumes where it was (the allocation before it is
            # deterministic and the sensitivity cached); removed once the frozen model is returned
            ckpt = ctx.step_dir / "qat_checkpoint"
            res = recover(model, ctx.train_loader(), self.recovery, teacher,
                          embedding=is_embedding, batch_size=ctx.batch_size,
                          seed=ctx.seed, progress=ctx.progress, desc="hawq QAT", device=ctx.device,
                          checkpoint_dir=str(ckpt), checkpoint_every=QAT_CHECKPOINT_EVERY,
                          validate=ctx.validation_score)
            metrics["qat"] = {**res.to_dict(), "steps": self.recovery.steps, "lr": self.recovery.lr,
                              "ranges": "dynamic (recomputed from w every forward), frozen after QAT"}
        freeze_all(model)
        model.eval()
        if self.recovery.steps:
            import shutil

            shutil.rmtree(ctx.step_dir / "qat_checkpoint", ignore_errors=True)
        metrics["avg_bits"] = round(average_bits(model, list(modules)), 4)
        metrics["bits"] = {n: bits[n] for n in modules}
        metrics["bits_per_layer"] = _per_layer(model, bits)
        if embedding:
            metrics["embedding"] = embedding
        specs.update(embedding)
        if specs:  # the report's Size table: the dense fp32 checkpoint and the packed one (real n-bit bytes)
            from compresslab.checkpoint.packed import packed_sizes

            ps = packed_sizes(model)
            metrics["size"] = {k: {"encoder": ps[k]["encoder"], "total": ps[k]["file"]}
                               for k in ("fp32", "packed_nbits")}
        # the packed checkpoint stores codes at their nominal bits: the real n-bit size on disk
        return PassResult(metrics=metrics, structure={"quant": specs}, formats=["packed_nbits"] if specs else [])

    def _allocation_couple(self, model: nn.Module, modules: Mapping[str, nn.Linear], couple: list[list[str]],
                           pins: Mapping[str, int]) -> list[list[str]]:
        """The groups the allocation gives one width: ``couple`` (Q/K/V under ``couple_qkv``), or under
        ``sensitivity=eigen`` every layer's Linears but the pinned ones (Q-BERT allocates per layer)."""
        if self.sensitivity is not Sensitivity.EIGEN:
            return couple
        keys = layer_keys(model, modules)
        by_layer: dict[str, list[str]] = {}
        for n in modules:
            if n not in pins:
                by_layer.setdefault(keys[n], []).append(n)
        return [g for g in by_layer.values() if len(g) > 1]

    def check_planned(self, model_class: type, config: Any, cache_dir: str | Path | None, progress: Any = None
                      ) -> None:
        """The ``check_planned`` hook: every budget of an allocation (``avg_bits``, ``size_bytes``, ``latency_limit``)
        is feasible on the model this step will be given (its shapes alone: numel, Q/K/V couplings, ``rules``' pins;
        for ``latency_limit`` the n-bit table of those shapes, the one the step reads: cached, or kept on the pass),
        before any step runs. InfeasibleBudgetError naming each budget's smallest achievable value."""
        if self.bits is not None or self.allocate is Allocate.RANDOM:  # no budget to meet: the widths are given
            return
        from compresslab.models.structure import planned_model

        model = planned_model(model_class, config)
        modules = select_modules(model, self.targets, self.ignore)
        if not modules:
            return  # check_model names the empty selection
        couple, pins = self._pins(model, modules)
        couple = self._allocation_couple(model, modules, couple, pins)
        latency, limit_s = None, None
        if self.latency_limit is not None:
            shapes = {n: self.group_shape(model, m) for n, m in modules.items()}
            latency, record = self.latency_table(modules, shapes, cache_dir)
            limit_s = record["limit_s"]
        self.check_feasible({n: m.weight.numel() for n, m in modules.items()}, couple, latency, limit_s, pins)

    def _embedding_spec(self, model: nn.Module) -> dict[str, dict[str, int]]:
        """{qualified name: spec} of the word embeddings under ``embedding_bits`` ({} when unset)."""
        if self.embedding_bits is None:
            return {}
        emb = model.get_input_embeddings()
        name = next(n for n, m in model.named_modules() if m is emb)
        dim = emb.weight.shape[1]
        block = self.block_size if dim % self.block_size == 0 else dim
        return {name: {"bits": self.embedding_bits, "block_size": block, "group_rows": 1}}

    def _allocate(self, model: nn.Module, ctx: PassContext, modules: Mapping[str, nn.Linear],
                  shapes: Mapping[str, tuple[int, int]]) -> tuple[dict[str, int], dict[str, Any]]:
        from compresslab.quant.allocate import allocate_bits, random_allocation

        numel = {n: m.weight.numel() for n, m in modules.items()}
        couple, pins = self._pins(model, modules)
        record: dict[str, Any] = {}
        if self.allocate is Allocate.RANDOM:
            bits = random_allocation(numel, avg_bits=self.avg_bits, choices=self.choices, seed=ctx.seed,
                                     couple=couple, tol=RANDOM_TOL, pinned=pins)
            record["allocation"] = {"method": "random", "seed": ctx.seed, "budget_avg_bits": self.avg_bits,
                                    "pinned": pins}
            return dict(bits), record
        couple = self._allocation_couple(model, modules, couple, pins)
        # the latency table and every budget's feasibility before the Hessian (minutes on MiniLM); the preflight
        # made the same check on the planned model (check_planned), this one stays for a model it could not plan
        latency, limit_s = None, None
        if self.latency_limit is not None:
            latency, record["latency"] = self.latency_table(modules, shapes, ctx.cache_dir)
            limit_s = record["latency"]["limit_s"]
        self.check_feasible(numel, couple, latency, limit_s, pins)
        sens, srec = self._sensitivity(model, ctx, modules)
        record["sensitivity"] = srec
        t0 = time.perf_counter()
        errors = {n: {b: (0.0 if b == FP32 else quant_error(m.weight, b, *shapes[n])) for b in self.choices}
                  for n, m in modules.items()}
        alloc = allocate_bits(sens, errors, numel, choices=self.choices, avg_bits=self.avg_bits,
                              size_bytes=self.size_bytes, latency=latency, latency_limit=limit_s, couple=couple,
                              method=self.allocate.value, pinned=pins)
        record["allocation"] = {**alloc.to_dict(), "budget_avg_bits": self.avg_bits,
                                "budget_size_bytes": self.size_bytes, "budget_latency_limit": self.latency_limit,
                                "solve_s": round(time.perf_counter() - t0, 3), "coupled_groups": len(couple)}
        if latency is not None and alloc.latency is not None:
            fp32 = record["latency"]["fp32_total_s"]
            record["latency"].update(predicted_s=alloc.latency, predicted_relative=alloc.latency / fp32,
                                     objective=alloc.objective)
            if self.avg_bits is not None or self.size_bytes is not None:
                # what the limit costs: the same program without it, priced by the same table (a
                # relaxation: its objective is never higher; equal whenever its map meets the limit)
                free = allocate_bits(sens, errors, numel, choices=self.choices, avg_bits=self.avg_bits,
                                     size_bytes=self.size_bytes, latency=latency, couple=couple,
                                     method=self.allocate.value, pinned=pins)
                record["latency"]["without_limit"] = {
                    "predicted_s": free.latency, "predicted_relative": free.latency / fp32,
                    "objective": free.objective, "avg_bits": free.avg_bits, "bits": dict(free.bits)}
        return dict(alloc.bits), record

    def _sensitivity(self, model: nn.Module, ctx: PassContext,
                     modules: Mapping[str, nn.Linear]) -> tuple[dict[str, float], dict[str, Any]]:
        """Ω per Linear (≥ 0) and the record of how it was estimated.

        Cached under ``ctx.cache_dir/hessian`` by content (every parameter of the model, the
        settings, the seed, the train data seen), so a sweep over budgets pays for the Hessian once.
        """
        path = _cache_path(ctx, model, modules, self.sensitivity.value, self.hessian)
        if path is not None and path.is_file():
            from compresslab.manifest import read_json

            cached = read_json(path)
            return cached["omega"], {**cached["record"], "cached": str(path)}
        omega, record = self._estimate(model, ctx, modules)
        if path is not None:
            from compresslab.manifest import atomic_write_json

            atomic_write_json(path, {"omega": omega, "record": record})
        return omega, record

    def _estimate(self, model: nn.Module, ctx: PassContext,
                  modules: Mapping[str, nn.Linear]) -> tuple[dict[str, float], dict[str, Any]]:
        from compresslab.quant.sensitivity import fisher_traces, layer_eigenvalues, linear_traces
        from compresslab.training.losses import task_loss, teacher_kl_loss

        h = self.hessian
        loss_fn = teacher_kl_loss if h.loss is HessianLoss.TEACHER_KL else task_loss
        before = next(model.parameters()).device
        model.to(ctx.device)
        # more batches than the train split holds: every batch it has (the same estimate, noisier), warned and
        # recorded, rather than a second epoch of the same examples
        asked = h.batches if self.sensitivity is Sensitivity.TRACE else h.eigen_batches
        available = -(-len(ctx.task.train) // h.batch_size)
        if asked > available:
            setting = "batches" if self.sensitivity is Sensitivity.TRACE else "eigen_batches"
            log.warning("hawq: hessian.%s=%d but the train split has %d examples (%d batches of hessian.batch_size=%d); "
                        "using %d", setting, asked, len(ctx.task.train), available, h.batch_size, available)
        try:
            loader = ctx.train_loader(batch_size=h.batch_size, shuffle=True)
            to_dev = lambda b: {k: v.to(ctx.device) for k, v in b.items()}  # noqa: E731
            if self.sensitivity is Sensitivity.TRACE:
                batches = [to_dev(b) for b in itertools.islice(loader, h.batches)]
            if self.sensitivity is Sensitivity.TRACE and h.estimator is HessianEstimator.EXACT:
                res = fisher_traces(model, batches, list(modules), max_batches=h.batches, rel_se_tol=h.rel_se_tol,
                                    seed=ctx.seed, progress=ctx.progress)
                raw = {n: float(v) for n, v in res.avg_traces().items()}
                record = {"method": "trace", "loss": h.loss.value, "estimator": h.estimator.value, **res.to_dict()}
            elif self.sensitivity is Sensitivity.TRACE:
                res = linear_traces(model, batches, list(modules), probes_per_batch=h.probes_per_batch,
                                    max_batches=h.batches, min_probes=h.min_probes, rel_se_tol=h.rel_se_tol,
                                    seed=ctx.seed, loss_fn=loss_fn, progress=ctx.progress)
                raw = {n: float(v) for n, v in res.avg_traces().items()}
                record = {"method": "trace", "loss": h.loss.value, **res.to_dict()}
            else:
                batches = [to_dev(b) for b in itertools.islice(loader, h.eigen_batches)]
                res = layer_eigenvalues(model, batches, max_batches=h.eigen_batches, max_iter=h.eigen_iters,
                                        tol=h.eigen_tol, seed=ctx.seed, loss_fn=loss_fn)
                layer_of = {n: layer for layer in res["layers"] for n in layer["names"]}
                missing = [n for n in modules if n not in layer_of]
                if missing:
                    raise ValueError(f"sensitivity=eigen covers the encoder layers' Linears only; {missing[:3]} "
                                     "are outside them (use sensitivity=trace, or ignore= them)")
                raw = {n: float(layer_of[n]["omega"]) for n in modules}
                record = {"method": "eigen", "loss": h.loss.value, **res}
        finally:
            model.to(before)
        if asked > available:
            record["batches_capped_from"] = asked  # record["batches"]: the batches used
        negative = sorted(n for n, v in raw.items() if v < 0)
        if negative:  # a negative curvature estimate is a signal (unconverged fine-tuning), not a bug
            record["negative_clamped_to_0"] = negative
        return {n: max(0.0, v) for n, v in raw.items()}, record


def _cache_path(ctx: PassContext, model: nn.Module, modules: Mapping[str, nn.Linear], method: str,
                settings: HessianSettings) -> "Path | None":
    """Where a sensitivity of this exact model, data and setting is cached (None: no cache dir)."""
    if ctx.cache_dir is None:
        return None
    import hashlib
    import json

    from compresslab.manifest import examples_sha256, state_dict_sha256, tokenizer_sha256

    h = hashlib.sha256(state_dict_sha256(model).encode())
    # every train example by content (the Hessian batches are drawn from all of them, not a count)
    # and the tokenizer that turns them into ids
    h.update(json.dumps({"method": method, "settings": dataclasses.asdict(settings), "seed": ctx.seed,
                         "modules": list(modules), "max_length": ctx.max_length,
                         "train": examples_sha256(ctx.task.train), "tokenizer": tokenizer_sha256(ctx.tokenizer)},
                        sort_keys=True).encode())
    return Path(ctx.cache_dir) / "hessian" / f"{h.hexdigest()[:20]}.json"


def _per_layer(model: nn.Module, bits: Mapping[str, int]) -> dict[str, list[int]]:
    keys = layer_keys(model, bits)
    out: dict[str, list[int]] = {}
    for n, b in bits.items():
        out.setdefault(keys[n], []).append(b)
    return out


__all__ = ["Hawq"]
