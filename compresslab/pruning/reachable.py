"""The preflight's reachability check of the speedup-targeted passes (``ziplm``, ``structured_l1``): a target above
the largest speedup the runtime allows is refused before any step runs, not when the step starts (after finetune,
layer_drop and whatever else comes first: minutes to an hour).

The latency table depends only on the architecture the step is given (hidden size, heads, FFN width, layer count),
the shape (batch x seq), the threads and the runtime, never on the weights. So the preflight builds a dense model of
that architecture with random weights, from the loaded model's config as the steps before this one leave it
(``planned_config``: layer_drop's fewer layers), and prices its floor on the table the step itself will use:

* cached (``paths.cache_dir``, keyed on that architecture): read, nothing exported or timed; the step reads it too;
* not cached: measured now (exporting the random dense model for ``T_dense``), written to the cache as the step
  would, and kept on the pass (:func:`preflight_table`), so the step never times it again, even when it could not
  be cached (a busy machine, or ``compress()``, which has no cache dir). A run that goes on pays nothing extra.

A speedup is relative to the model the step is given: after ``layer_drop`` to 3 layers, ``speedup=2`` means twice
as fast as the 3-layer model, so the floor is priced at 3 layers. Not planned here (the step's own check, the same
rule on the same table, stays): a step after another step that changes the structure in a way not known in advance
(an earlier ziplm or structured_l1), and ``latency_runtime`` listing several runtimes (which is fastest is timed on
the dense model when the step starts, and not cached).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresslab.bench.latency_table import TableSettings, build_latency_table, cached_latency_table, environment
from compresslab.bench.table_cache import stable_hash
from compresslab.ops.spdy import LatencyTable
from compresslab.pruning.speedup_settings import SpeedupSettings, structure_of

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

Measured = tuple[LatencyTable, dict[str, Any]]

# the attribute of a pass instance that holds the tables its preflight measured, by environment hash (not a field:
# not a setting, not in the run identity)
_KEPT = "_preflight_tables"


def check_reachable(p: SpeedupSettings, model_class: type, config: Any, cache_dir: str | Path | None,
                    progress: Any = None) -> None:
    """ValueError naming the targets of ``p`` that the model of ``model_class`` and ``config`` (as the steps
    before ``p``'s step leave it) cannot reach, and the largest it can; see the module docstring. Several
    candidate runtimes: nothing is checked here (the step checks after choosing)."""
    from compresslab.models.structure import planned_model

    dense = planned_model(model_class, config)
    p.refuse_start(structure_of(dense))  # before any timing (structured_l1: a uniform model only)
    if len(p.runtimes()) != 1 or not any(t > 1.0 for t in p.targets()):
        return
    settings = p.table_settings()
    measured = cached_latency_table(dense, settings, cache_dir=cache_dir)
    if measured is None:
        from compresslab.bench.latency_probes import deploy_probe

        layers = len(structure_of(dense)["heads"])
        # minutes at full size before any training: say why, or it reads as a hang before the teacher (trial 48b)
        log.info("preflight: timing the latency table of the %d-layer model this step is given, to check the speedup "
                 "target(s) %s before any training (kept: the step reuses it)", layers, p.targets())
        with tempfile.TemporaryDirectory(prefix="reachable-") as work:
            onnx = deploy_probe(dense, Path(work) / "dense.onnx", settings, layers)
            measured = build_latency_table(dense, onnx, settings, cache_dir=cache_dir, progress=progress)
        p.__dict__.setdefault(_KEPT, {})[_key(dense, settings)] = measured
    table, _ = p.priced(*measured)
    choice = structure_of(dense)
    p.refuse_unreachable(table, choice, p.targets(), given=f" for the {len(choice['heads'])}-layer model this step is "
                         "given (a speedup is relative to it)")


def preflight_table(p: SpeedupSettings, dense: "nn.Module", settings: TableSettings) -> Measured | None:
    """The table :func:`check_reachable` measured for ``dense``'s architecture at ``settings`` on this pass instance
    (None: none, or another architecture or shape): the step uses it rather than timing the same table again."""
    kept = p.__dict__.get(_KEPT)
    return kept.get(_key(dense, settings)) if kept else None


def _key(model: "nn.Module", settings: TableSettings) -> str:
    """Everything a table is valid for (:func:`~compresslab.bench.latency_table.environment`), hashed."""
    return stable_hash(environment(model, settings))


class PlannedReachability:
    """The ``check_planned`` hook of the speedup-targeted passes (mixed into ``ziplm`` and ``structured_l1``, which
    are :class:`SpeedupSettings`): :func:`check_reachable` on the model the step will be given."""

    def check_planned(self, model_class: type, config: Any, cache_dir: str | Path | None, progress: Any = None
                      ) -> None:
        assert isinstance(self, SpeedupSettings), "mixed into a SpeedupSettings pass"
        check_reachable(self, model_class, config, cache_dir, progress)
