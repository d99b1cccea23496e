"""The settings of the passes that remove heads and FFN neurons to hit a *measured* speedup (``ziplm`` and
``structured_l1``), validated on construction, and what they declare to the pipeline (hooks); the work itself is
:mod:`compresslab.pruning.speedup`, the preflight's reachability check :mod:`compresslab.pruning.reachable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from compresslab.bench.latency_runtimes import RUNTIMES
from compresslab.bench.latency_table import TableSettings, linear_table, one_layer_table
from compresslab.ops.spdy import LatencyTable
from compresslab.training.recovery import Recovery
from compresslab.types import hook
from compresslab.validate import choice_hint, coerce_block, coerce_enum

if TYPE_CHECKING:
    from torch import nn

Choice = dict[str, list[int]]  # {"heads": [per layer], "ffn": [per layer]}: remaining sizes


def smallest_head_count(table: LatencyTable, at_most: int) -> int | None:
    """The smallest head count above 0 that ``table`` prices and a layer of ``at_most`` heads can shrink to."""
    return min((s for s in table.sizes("attention") if 0 < s <= at_most), default=None)


def skipped_layers(choice: Choice) -> list[int]:
    """Layers left with no attention head and no FFN neuron: each adds only its output biases before its
    LayerNorms (ALGORITHMS.md §4.2), a skip like a dropped layer."""
    return [i for i, (h, f) in enumerate(zip(choice["heads"], choice["ffn"])) if h == 0 and f == 0]


def structure_of(model: "nn.Module") -> Choice:
    """``model``'s heads and FFN neurons per layer, as a :data:`Choice`."""
    from compresslab.models.adapters import get_adapter

    s = get_adapter(model).structure()
    return {"heads": [x["heads"] for x in s], "ffn": [x["ffn"] for x in s]}


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

    def refuse_start(self, start: Choice) -> None:
        """ValueError where the pass cannot start from the structure ``start`` (the model it is given); asked by its
        apply and, on the planned model, by the preflight (pruning/reachable.py). Any structure here."""

    def priced(self, table: LatencyTable, info: dict[str, Any]) -> tuple[LatencyTable, dict[str, Any] | None]:
        """The table the search prices with under ``latency_model``, from a measured (or cached) table and its
        info (:func:`~compresslab.bench.latency_table.build_latency_table`), and the linear model's record (None
        for the others). The step and the preflight's reachability check price the same way."""
        if self.latency_model is LatencyModel.ONE_LAYER:
            return one_layer_table(info), None
        if self.latency_model is LatencyModel.LINEAR:
            return linear_table(info)
        return table, None

    def max_speedup(self, table: LatencyTable, dense: Choice) -> float:
        """The largest speedup this pass may reach from the structure ``dense`` (the model it is given):
        ``T(dense) / T(fastest structure)``."""
        fastest = self.fastest_structure(table, dense)
        t = table.predict({"attention": fastest["heads"], "ffn": fastest["ffn"]})
        return math.inf if t <= 0 else table.predict({"attention": dense["heads"], "ffn": dense["ffn"]}) / t

    def refuse_unreachable(self, table: LatencyTable, dense: Choice, targets: list[float], given: str = "") -> None:
        """ValueError naming the targets the runtime cannot reach from ``dense`` (the structure of the model the
        step is given: a speedup is relative to it), and the largest it can; ``given`` describes that model in the
        message (the preflight: its layer count after an earlier layer_drop)."""
        top = self.max_speedup(table, dense)
        bad = [s for s in targets if s > 1.0 and s >= top]
        if not bad:
            return
        fastest = self.fastest_structure(table, dense)
        t_dense = table.predict({"attention": dense["heads"], "ffn": dense["ffn"]})
        raise ValueError(
            f"speedup target(s) {bad} are not reachable at b{self.batch}xs{self.seq} on this runtime{given}: the "
            f"largest reachable speedup is {top:.2f}x, that of the fastest structure this pass may choose "
            f"({self.fastest_rule}: {fastest}). Emptying every layer is not offered: with no attention "
            "head left no token sees another, so a [CLS] classifier would give every input the same output. "
            f"Embeddings, LayerNorms and the head take {table.base_time * 1e3:.1f} ms of "
            f"{t_dense * 1e3:.1f} ms; choose a target below {top:.2f}x")

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
