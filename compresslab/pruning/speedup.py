"""Shared glue of the passes that remove heads and FFN neurons to hit a *measured* speedup.

``ziplm`` and its baseline ``structured_l1`` differ only in how they choose what to remove and
how they refit what is left; everything else is here so both get exactly the same treatment:
the dense export and latency table on the target runtime, the re-measure-and-tighten loop, KD
recovery (``training.recover``), and saving the family of models for the benchmark.
It registers no pass.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from torch import nn

from compresslab.bench.latency_runtimes import as_deployed, fastest_runtime, measure_speedup, reads_plain
from compresslab.bench.latency_table import TableSettings, build_latency_table
from compresslab.models.adapters import get_adapter
from compresslab.models.inmemory import clone
from compresslab.training.recovery import Recovery
from compresslab.training.recovery import recover as _train_recover
from compresslab.pruning.reachable import preflight_table
from compresslab.types import PassContext
# the settings and what they declare (speedup_settings, split off by size), also importable from here
from compresslab.pruning.speedup_settings import (
    Choice, LatencyModel, SpeedupSettings, off_grid, skipped_layers, smallest_head_count, structure_of)

log = logging.getLogger(__name__)

__all__ = ["Choice", "LatencyModel", "SpeedupLab", "SpeedupSettings", "check_layout", "off_grid", "oneshot_family",
           "recover", "result_metrics", "sample_batches", "save_member", "skipped_layers", "smallest_head_count",
           "structure_of"]


def check_layout(model: nn.Module) -> None:
    """Refuse layouts where a layer cannot lose every head (the latency model needs t_att(0))."""
    for lv in get_adapter(model).layers():
        if lv.self_attn is lv.attention:
            raise ValueError(f"{model.config.model_type}: emptying a layer's attention needs the BERT/RoBERTa "
                             "layout; speedup-targeted structured pruning supports bert and roberta")


def sample_batches(ctx: PassContext, n: int) -> list[dict]:
    """A few real train batches for export tracing and parity."""
    return list(itertools.islice(ctx.calibration_batches(min(n, 16), batch_size=8), 2))


class SpeedupLab:
    """The dense model on the target runtime: its deployed file, the latency table and the check.

    Use as a context manager; the exports live in a temporary folder under the step dir.
    """

    def __init__(self, dense: nn.Module, ctx: PassContext, p: SpeedupSettings, samples: list[dict]) -> None:
        from compresslab.export import export_model

        self.ctx, self.p, self.samples = ctx, p, samples
        ctx.step_dir.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".speedup-", dir=ctx.step_dir))
        self._n = 0
        self.linear_record: dict[str, Any] | None = None  # latency_model=linear: its lines and refit
        self.runtime_choice: dict[str, Any] | None = None  # several candidate runtimes: the timing that chose one
        try:
            # one export of the dense model serves every candidate runtime: the choice (several) and the table
            vocab, runtimes = int(dense.config.vocab_size), p.runtimes()
            res = export_model(dense, ctx.tokenizer, self.work / "dense", samples, threads=p.run_threads(),
                               keep_unfused=any(reads_plain(rt) for rt in runtimes))
            files = {rt: self._deployed(res, vocab, p.table_settings(rt)) for rt in runtimes}
            if len(runtimes) > 1:
                self.runtime_choice = fastest_runtime(files, p.table_settings(runtimes[0]), runs=p.check_runs,
                                                      vocab_size=vocab)
            chosen = self.runtime_choice["chosen"] if self.runtime_choice else runtimes[0]
            self.settings = p.table_settings(chosen)
            self.dense_onnx = files[chosen]
            # the table the preflight priced this architecture with (cached on disk, or kept on the pass when it
            # was not: a busy machine, no cache_dir): never timed twice in one run
            measured = preflight_table(p, dense, self.settings) or build_latency_table(
                dense, self.dense_onnx, self.settings, cache_dir=ctx.cache_dir, progress=ctx.progress)
            self.table_info = measured[1]
            self.table, self.linear_record = p.priced(*measured)
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise
        self.dense_choice = structure_of(dense)
        self.t_dense = self.predict(self.dense_choice)

    @property
    def _plain(self) -> bool:
        """OpenVINO runtimes read the plain export (ORT's fused graph has com.microsoft ops)."""
        return reads_plain(self.settings.runtime)

    def _deployed(self, res: Any, vocab: int, settings: TableSettings | None = None) -> Path:
        """The file of an :class:`~compresslab.export.ExportResult` that the table's runtime (or ``settings``') times."""
        s = settings or self.settings
        src = (res.unfused_path or res.onnx_path) if reads_plain(s.runtime) else res.onnx_path
        return as_deployed(src, s, vocab)

    def __enter__(self) -> "SpeedupLab":
        return self

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def fastest(self) -> Choice:
        """The fastest structure the pass may choose (``SpeedupSettings.fastest_structure``: never every head)."""
        return self.p.fastest_structure(self.table, self.dense_choice)

    @property
    def max_speedup(self) -> float:
        """The largest speedup the pass may reach: ``T_dense / T(fastest structure)``."""
        return self.p.max_speedup(self.table, self.dense_choice)

    def check_targets(self, targets: list[float]) -> None:
        """Clear error for targets the runtime cannot reach, before any Hessian is computed: the preflight made
        the same check on the planned architecture (:mod:`compresslab.pruning.reachable`); this one stays for a
        model the preflight could not plan (after an earlier structured step, several runtimes to choose from)."""
        self.p.refuse_unreachable(self.table, self.dense_choice, targets)

    def budget(self, target: float) -> float:
        """Time the pruned modules may take: ``B = T_dense / S - t_0``."""
        return self.t_dense / target - self.table.base_time

    def lowest_budget(self) -> float:
        """The budget of the fastest allowed structure, a hair above it so that the DP's rounded-up buckets still
        fit its one head: a tighter budget has no allowed structure."""
        return (self.predict(self.fastest()) - self.table.base_time) * (1 + 1e-6)

    def predict(self, choice: Choice) -> float:
        """Predicted time (s) of a structure: ``t_0 + sum_layers t_att(h) + t_ffn(n)``."""
        return self.table.predict({"attention": choice["heads"], "ffn": choice["ffn"]})

    def predicted_speedup(self, choice: Choice) -> float:
        return self.t_dense / self.predict(choice)

    def measure(self, model: nn.Module) -> dict[str, float]:
        """Export ``model`` (parity-checked) and time its deployed file against the dense one."""
        from compresslab.export import export_model

        self._n += 1
        out = self.work / f"candidate{self._n}"
        try:
            res = export_model(model, self.ctx.tokenizer, out, self.samples, threads=self.p.run_threads(),
                               keep_unfused=self._plain)
            vocab = int(model.config.vocab_size)
            return measure_speedup(self.dense_onnx, self._deployed(res, vocab), self.settings, runs=self.p.check_runs,
                                   vocab_size=vocab)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def search(self, target: float, solve: Callable[[float], Choice],
               build: Callable[[Choice], nn.Module]) -> tuple[Choice, nn.Module, dict[str, Any]]:
        """Solve for the budget, build, measure; tighten the budget while the speedup falls short.

        The budget is scaled by measured / target, which over-corrects slightly (t_0 does not
        shrink) and so converges in a retry or two.
        """
        lowest = self.lowest_budget() if target > 1.0 else 0.0
        budget, attempts = max(self.budget(target), lowest), []
        for _ in range(self.p.max_retries + 1 if target > 1.0 else 1):
            choice = solve(budget) if target > 1.0 else self.dense_choice  # 1x is the dense model
            model = build(choice)
            m = self.measure(model)
            attempts.append({"budget_ms": budget * 1e3, "predicted_speedup": self.predicted_speedup(choice),
                             "measured_speedup": m["speedup"], "dense_ms": m["dense_ms"],
                             "pruned_ms": m["candidate_ms"], "busy": bool(m.get("busy"))})  # busy: ratio void
            if m["speedup"] >= target * (1 - self.p.tolerance):
                break
            if budget <= lowest:  # already the fastest allowed structure: nothing tighter to try
                break
            log.info("%.2fx target: measured %.3fx (predicted %.3fx); tightening the budget", target,
                     m["speedup"], attempts[-1]["predicted_speedup"])
            budget = max(budget * m["speedup"] / target, lowest)
        met = target == 1.0 or attempts[-1]["measured_speedup"] >= target * (1 - self.p.tolerance)
        if not met:
            warnings.warn(f"{target}x target missed after {len(attempts)} attempt(s): measured "
                          f"{attempts[-1]['measured_speedup']:.3f}x; raise max_retries or check the latency table",
                          stacklevel=2)
        skipped = skipped_layers(choice)
        if skipped:  # legitimate (ZipLM removes whole modules), but the user should know the depth changed
            log.warning("%gx target: layer(s) %s keep no attention head and no FFN neuron: each is skipped (it adds "
                        "only its output biases before its LayerNorms), as if dropped", target, skipped)
        # retries and the first try's measured / target: how well the latency model priced the target
        # measured_speedup + shape: what the report reads, at any shape; measured_speedup_b<batch>: the key earlier
        # manifests and the benchmark scripts read (it names the batch only)
        record = {"target_speedup": target, "predicted_speedup": attempts[-1]["predicted_speedup"],
                  "measured_speedup": attempts[-1]["measured_speedup"], "shape": [self.p.batch, self.p.seq],
                  f"measured_speedup_b{self.p.batch}": attempts[-1]["measured_speedup"], "met_target": met,
                  "retries": len(attempts) - 1, "first_try_ratio": attempts[0]["measured_speedup"] / target,
                  "attempts": attempts, "structure": choice, "skipped_layers": skipped,
                  "params": sum(t.numel() for t in model.parameters())}
        return choice, model, record


def recover(model: nn.Module, ctx: PassContext, recovery: Recovery, teacher: nn.Module, desc: str) -> dict[str, Any]:
    """KD recovery of a pruned member through ``training.recover``; {} when ``recovery.steps`` is 0."""
    if recovery.steps == 0:
        return {}
    from compresslab.data.schema import TaskKind

    res = _train_recover(model, ctx.train_loader(), recovery, teacher,
                         embedding=ctx.task.spec.kind is TaskKind.EMBEDDING, batch_size=ctx.batch_size,
                         seed=ctx.seed, progress=ctx.progress, desc=desc, device=ctx.device,
                         validate=ctx.validation_score)
    return res.to_dict()


def family_dir(ctx: PassContext) -> Path:
    """``run_dir/family/<step dir name>``: beside, not inside, the step dir, because the pipeline
    replaces the step dir wholesale when it checkpoints the step's model."""
    return ctx.run_dir / "family" / ctx.step_dir.name


def save_member(model: nn.Module, ctx: PassContext, target: float, record: dict[str, Any]) -> str:
    """Save one family member (model, tokenizer, its record) under ``family_dir(ctx)/<S>x``."""
    from compresslab.manifest import atomic_write_json
    from compresslab.checkpoint import save

    out = save(model, family_dir(ctx) / f"{target:g}x", ctx.tokenizer)
    atomic_write_json(out / "ziplm_family.json", record)
    return str(out)


def oneshot_family(model: nn.Module, dense: nn.Module, ctx: PassContext, p: SpeedupSettings, lab: SpeedupLab,
                   solve: Callable[[float], Choice], apply: Callable[[nn.Module, Choice], None],
                   teacher: nn.Module, name: str) -> dict[float, dict[str, Any]]:
    """Every target from the same dense model; ``model`` becomes the step's target, recovered.

    Family members other than the step's are saved as pruned (recovering each would multiply
    the budget); the step's model is saved after its recovery.
    """
    def build(choice: Choice) -> nn.Module:
        m = clone(dense)
        apply(m, choice)
        return m

    records: dict[float, dict[str, Any]] = {}
    step_choice: Choice | None = None
    for target in p.targets():
        choice, cand, rec = lab.search(target, solve, build)
        records[target] = rec
        if target == p.speedup:
            step_choice = choice
        elif target in p.family:
            rec["saved"] = save_member(cand, ctx, target, rec)
        del cand
    assert step_choice is not None  # p.speedup is always among p.targets()
    apply(model, step_choice)
    records[p.speedup]["recovery"] = recover(model, ctx, p.recovery, teacher, f"{name} {p.speedup:g}x recovery")
    if p.speedup in p.family:
        records[p.speedup]["saved"] = save_member(model, ctx, p.speedup, records[p.speedup])
    return records


def result_metrics(p: SpeedupSettings, records: dict[float, dict[str, Any]], lab: SpeedupLab,
                   params_dense: int) -> dict[str, Any]:
    """The step's record at top level, the family by target, and how the table was made."""
    step = {k: v for k, v in records[p.speedup].items() if k != "structure"}
    info = {k: v for k, v in lab.table_info.items() if k in ("cached", "measure_s", "cache_file", "not_cached",
                                                             "machine_load")}
    # void figures are flagged where they are read: a table, the runtime choice or a speedup check timed busy
    info["busy"] = bool((info.get("machine_load") or {}).get("busy"))
    info["model"] = p.latency_model.value
    info["runtime"] = lab.settings.runtime
    if lab.runtime_choice:  # several candidates: each one's dense median, and its machine_load record (for reports)
        info["runtime_choice"] = lab.runtime_choice
        info["busy"] = info["busy"] or bool(lab.runtime_choice.get("busy"))
    cal = (lab.table_info.get("raw") or {}).get("calibration")
    if cal:  # the fitted costs and every calibration point, measured vs predicted before/after the fit
        info["calibration"] = {k: v for k, v in cal.items() if k not in ("one_layer_table", "fit")}
    if lab.linear_record:  # latency_model=linear: its lines and refit on the same points
        info["linear"] = {k: v for k, v in lab.linear_record.items() if k != "fit"}
    step["busy_checks"] = sum(a.get("busy", False) for r in records.values() for a in r.get("attempts", []))
    step["retries_total"] = sum(len(r.get("attempts", [])) - 1 for r in records.values() if r.get("attempts"))
    return {**step, "params_dense": params_dense, "dense_ms_predicted": lab.t_dense * 1e3,
            "max_speedup": lab.max_speedup, "latency_table": info,
            "family": {f"{s:g}x": {k: v for k, v in r.items() if k != "attempts"} for s, r in records.items()}}
