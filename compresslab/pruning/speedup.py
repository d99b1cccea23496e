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
import math
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

from compresslab.bench.latency_runtimes import RUNTIMES, as_deployed, fastest_runtime, measure_speedup, reads_plain
from compresslab.bench.latency_table import TableSettings, build_latency_table, linear_table, one_layer_table
from compresslab.models.adapters import get_adapter
from compresslab.models.inmemory import clone
from compresslab.ops.spdy import LatencyTable
from compresslab.training.recovery import Recovery
from compresslab.training.recovery import recover as _train_recover
from compresslab.types import PassContext, hook
from compresslab.validate import choice_hint, coerce_block, coerce_enum

log = logging.getLogger(__name__)

Choice = dict[str, list[int]]  # {"heads": [per layer], "ffn": [per layer]}: remaining sizes


def smallest_head_count(table: LatencyTable, at_most: int) -> int | None:
    """The smallest head count above 0 that ``table`` prices and a layer of ``at_most`` heads can shrink to."""
    return min((s for s in table.sizes("attention") if 0 < s <= at_most), default=None)


def skipped_layers(choice: Choice) -> list[int]:
    """Layers left with no attention head and no FFN neuron: each adds only its output biases before its
    LayerNorms (ALGORITHMS.md §4.2), a skip like a dropped layer."""
    return [i for i, (h, f) in enumerate(zip(choice["heads"], choice["ffn"])) if h == 0 and f == 0]


class LatencyModel(str, Enum):
    """What the search prices a structure with (``bench/latency_table.py``).

    ``linear`` (the default): the one-layer table put on one least-squares line per module type
    (``bench.latency_table.linear_table``: the search cannot pick sizes whose probes came out low by
    chance), corrected by whole-model timings (a fixed cost per present module and a scale, fitted by least
    squares); ``calibrated``: the same correction on the one-layer table as measured; ``one_layer``: the
    one-layer table alone (the method before issue #13, kept to compare retries on the same measurement).
    All three come from the same cached measurement. Priced on the same 12 measured structures, linear
    lands 11 of 12 first tries in the window [0.95, 1.15], calibrated 8 and one_layer 2
    (``benchmarks/RESULTS.md``, ZipLM retries; the check's own spread is 1-2 %).
    """

    CALIBRATED = "calibrated"
    LINEAR = "linear"
    ONE_LAYER = "one_layer"


@dataclass
class SpeedupSettings:
    """Settings common to the speedup-targeted structured passes (validated on construction).

    ``speedup`` is the target this pipeline step applies (its model is the step's output);
    ``family`` lists targets whose models are saved under ``run_dir/family/<step>/<S>x/`` for
    the benchmark. ``batch`` x ``seq`` is the deployment shape the speedup is measured at.
    """

    speedup: float = 2.0
    family: list[float] = field(default_factory=list)
    batch: int = 32
    seq: int = 128
    threads: int | None = None  # ORT intra-op threads; None = the run's (run.threads, as the process pinned torch)
    ffn_grid: int = 32  # FFN widths stay multiples of this (latency is tile-quantized)
    latency_warmup: int = 3
    latency_runs: int = 30  # interleaved rounds per latency-table entry (median)
    check_runs: int = 15  # interleaved rounds of each dense-vs-pruned speedup check
    max_retries: int = 2  # re-solve with a tighter budget while the measured speedup falls short
    tolerance: float = 0.02  # accept measured >= target * (1 - tolerance): timing noise
    num_calibration: int = 2048
    latency_model: LatencyModel = LatencyModel.LINEAR
    # the runtime the table and the speedup checks time (bench.latency_runtimes.RUNTIMES): ort | ort_int8 | openvino |
    # openvino_int8, or a list of them: the one that runs the dense model fastest on this machine, timed before the
    # table (bench.latency_runtimes.fastest_runtime; recorded). A target is a speedup on that runtime only (a shrink
    # does not carry over whole), and which int8 runtime is fastest depends on the CPU's ISA.
    latency_runtime: str | list[str] = "ort"
    # KD after pruning (gradual: after every target); hidden_weight: HiddenMSE over every layer's output
    recovery: Recovery = field(default_factory=Recovery)

    # latency_runtime (2026-12-05): ZipLM and L1 priced on ORT fp32 before it (types.PASS_FLAGS)
    identity_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({"latency_runtime": "ort"})

    @classmethod
    def identity_settings(cls, node: dict[str, Any]) -> dict[str, Any]:
        """``latency_runtime`` as one setting in the run identity: ``[ort_int8]`` is ``ort_int8``."""
        rt = node.get("latency_runtime")
        return {**node, "latency_runtime": rt[0]} if isinstance(rt, list) and len(rt) == 1 else node

    def __post_init__(self) -> None:
        self.recovery = coerce_block(self, "recovery", Recovery)
        self.latency_model = coerce_enum(LatencyModel, self.latency_model, "latency_model")
        self.family = [float(s) for s in (self.family or [])]
        for s in (self.speedup, *self.family):
            if not (math.isfinite(s) and s >= 1.0):
                raise ValueError(f"speedup targets must be finite and >= 1 (1 = dense), got {s!r}")
        for name in ("batch", "seq", "ffn_grid", "latency_runs", "check_runs", "num_calibration"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("latency_warmup", "max_retries"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.tolerance < 0.5:
            raise ValueError(f"tolerance must be in [0, 0.5), got {self.tolerance!r}")
        if not isinstance(self.latency_runtime, (str, list, tuple)):
            raise ValueError(f"latency_runtime must be one of {list(RUNTIMES)} or a list of them (default 'ort'), "
                             f"got {self.latency_runtime!r}")
        if not isinstance(self.latency_runtime, str):  # a YAML list
            self.latency_runtime = [str(r) for r in self.latency_runtime]
            if not self.latency_runtime:
                raise ValueError("latency_runtime is an empty list: name a runtime, or several to choose the "
                                 "fastest of")
            if len(set(self.latency_runtime)) != len(self.latency_runtime):
                raise ValueError("latency_runtime lists a runtime twice: name distinct runtimes to choose the "
                                 f"fastest of, got {self.latency_runtime!r}")
        unknown = [rt for rt in self.runtimes() if rt not in RUNTIMES]
        if unknown:  # named as the user wrote the setting (TableSettings would say "latency table runtime")
            raise ValueError(f"latency_runtime must be one of {list(RUNTIMES)} or a list of them, got "
                             f"{self.latency_runtime!r} ({', '.join(map(repr, unknown))} unknown)"
                             f"{''.join(choice_hint(rt, RUNTIMES) for rt in unknown)}")
        # validates threads, and that each runtime's library is installed (before any step runs)
        for runtime in self.runtimes():
            TableSettings(threads=self.threads, runtime=runtime).check_runtime()

    # what fastest_structure keeps, in words (the unreachable-target error names it)
    fastest_rule: ClassVar[str] = "every FFN neuron and every attention head but one removed"

    def fastest_structure(self, table: LatencyTable, start: Choice) -> Choice:
        """The fastest structure the search may choose from ``start``: every FFN neuron and every head but one gone.

        Why one head is kept (in all the layers together): with no attention head anywhere no token sees another,
        so a [CLS]-pooled classifier gives every input the same output (a mean-pooled embedding becomes a bag of
        tokens). One head in any layer restores the mixing; keeping more is an accuracy trade-off the search's
        errors already price, and a floor per layer would forbid emptying a layer, which is legitimate (ZipLM
        removes whole modules; the layer is then skipped, as layer dropping does).
        """
        best = None  # (heads, layer): the smallest positive head count any layer can shrink to
        for i, h in enumerate(start["heads"]):
            s = smallest_head_count(table, h)
            if s is not None and (best is None or s < best[0]):
                best = (s, i)
        if best is None:
            raise ValueError(f"the model has no attention head the latency table prices (heads per layer "
                             f"{start['heads']}, table sizes {table.sizes('attention')}): a model with no head left "
                             "cannot look across tokens, so there is nothing this pass may shrink it to")
        heads = [0] * len(start["heads"])
        heads[best[1]] = best[0]
        return {"heads": heads, "ffn": [0] * len(start["ffn"])}

    def runtimes(self) -> list[str]:
        """The candidate runtimes: one, or several to choose the fastest of."""
        return [self.latency_runtime] if isinstance(self.latency_runtime, str) else list(self.latency_runtime)

    def targets(self) -> list[float]:
        """Every target this pass produces, ascending (the step's own and the family)."""
        return sorted({self.speedup, *self.family})

    def check_after(self, earlier: list[Any]) -> None:
        """Plan-time check against the steps before this one: an earlier structured step leaves FFN widths on its
        ``ffn_grid``; this one's latency table has entries on its own grid only, so that grid must divide the
        earlier one (else the table has no entry for the widths it is given: found after the Hessians)."""
        bad = off_grid(earlier, self.ffn_grid)
        if bad:
            name, grid = bad[0]
            raise ValueError(f"ffn_grid={self.ffn_grid} does not divide the earlier {name} step's ffn_grid={grid}: the FFN "
                             f"widths it leaves are multiples of {grid}, which this step's latency table (a width every "
                             f"{self.ffn_grid}) does not hold; use one ffn_grid for both, or one that divides {grid}")

    def ffn_width_multiple(self) -> int:
        """The multiple every FFN width this step leaves is on (the ``ffn_width_multiple`` hook): ``ffn_grid``, which
        a later structured or block-pruning step's own grid must divide (:func:`off_grid`)."""
        return self.ffn_grid

    def recovery_settings(self) -> Recovery:
        """The KD recovery after each target's prune (the ``recovery_settings`` hook): the pipeline asks it whether a
        teacher must be made before this step (pipeline/plan.py needs_teacher)."""
        return self.recovery

    def run_threads(self) -> int:
        """The intra-op threads every table entry and speedup check runs with: ``threads``, else the run's (the CLI
        pins torch to ``run.threads``; in ``compress()`` the caller's torch setting), as the bench stage times the
        result: a table priced at another thread count than the report's would misprice every structure."""
        import torch

        return self.threads if self.threads is not None else torch.get_num_threads()

    def sequence_lengths(self) -> dict[str, int]:
        """The latency table's and speedup checks' shape length, checked against the model's position table
        before any work (pipeline/preflight.py, the ``sequence_lengths`` hook)."""
        return {"seq": self.seq}

    def table_settings(self, runtime: str | None = None) -> TableSettings:
        """The table's settings on ``runtime`` (default: the one candidate; required when there are several)."""
        if runtime is None:
            if len(self.runtimes()) != 1:
                raise ValueError("several latency runtimes: name the chosen one")
            runtime = self.runtimes()[0]
        return TableSettings(batch=self.batch, seq=self.seq, threads=self.run_threads(), ffn_grid=self.ffn_grid,
                             warmup=self.latency_warmup, runs=self.latency_runs, runtime=runtime)


def off_grid(earlier: list[Any], divisor: int) -> list[tuple[str, int]]:
    """``(name, grid)`` of each earlier step that leaves FFN widths on a grid (its ``ffn_width_multiple`` hook gives
    an int) whose widths are not all multiples of ``divisor``: its grid is not a multiple of it. A field that merely
    happens to be called ``ffn_grid`` is not asked."""
    grids = [(p.name, _width_multiple(p)) for p in earlier]
    return [(name, grid) for name, grid in grids if isinstance(grid, int) and grid % divisor]


def _width_multiple(pass_: Any) -> int | None:
    """The multiple ``pass_``'s FFN widths are left on (its ``ffn_width_multiple`` hook), or None: it has none."""
    own = hook(pass_, "ffn_width_multiple")
    return own() if own is not None else None


def check_layout(model: nn.Module) -> None:
    """Refuse layouts where a layer cannot lose every head (the latency model needs t_att(0))."""
    for lv in get_adapter(model).layers():
        if lv.self_attn is lv.attention:
            raise ValueError(f"{model.config.model_type}: emptying a layer's attention needs the BERT/RoBERTa "
                             "layout; speedup-targeted structured pruning supports bert and roberta")


def structure_of(model: nn.Module) -> Choice:
    s = get_adapter(model).structure()
    return {"heads": [x["heads"] for x in s], "ffn": [x["ffn"] for x in s]}


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
            self.table, self.table_info = build_latency_table(dense, self.dense_onnx, self.settings,
                                                              cache_dir=ctx.cache_dir, progress=ctx.progress)
            if p.latency_model is LatencyModel.ONE_LAYER:
                self.table = one_layer_table(self.table_info)
            elif p.latency_model is LatencyModel.LINEAR:
                self.table, self.linear_record = linear_table(self.table_info)
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
        t = self.predict(self.fastest())
        return math.inf if t <= 0 else self.t_dense / t

    def check_targets(self, targets: list[float]) -> None:
        """Clear error for targets the runtime cannot reach, before any Hessian is computed."""
        top = self.max_speedup
        bad = [s for s in targets if s > 1.0 and s >= top]
        if bad:
            raise ValueError(
                f"speedup target(s) {bad} are not reachable at b{self.p.batch}xs{self.p.seq} on this runtime: the "
                f"largest reachable speedup is {top:.2f}x, that of the fastest structure this pass may choose "
                f"({self.p.fastest_rule}: {self.fastest()}). Emptying every layer is not offered: with no attention "
                "head left no token sees another, so a [CLS] classifier would give every input the same output. "
                f"Embeddings, LayerNorms and the head take {self.table.base_time * 1e3:.1f} ms of "
                f"{self.t_dense * 1e3:.1f} ms; choose a target below {top:.2f}x")

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
