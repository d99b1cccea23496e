"""``ort_int8_dynamic``: ONNX Runtime dynamic int8 of the exported, fused graph (Stage.ONNX).

Weights become int8 offline; activations are quantized on the fly per call, so no calibration
data is needed. Works on the fused graph (``Attention`` -> ``QAttention``) so int8 keeps the
fused kernels; if the incoming graph is unfused and ``optimize`` is set, it is fused first with
the head counts from ``config.json``. The math lives in ``export/ort_quant.py``.

``fp32_fallback: guided`` keeps some weight MatMuls fp32, chosen on the validation split against
the incoming fp32 graph's predictions under a latency budget (``quant/guided_int8.py``).

``activations: per_token`` gives each token its own activation scale instead of one per call
(``export/per_token_int8.py``): fewer flips against fp32, and a sentence's output no longer depends on
its batchmates. ``QAttention`` takes one scale per call, so with ``op_types: null`` only ``MatMul`` is
quantized and the fused ``Attention`` (its Q/K/V projections) stays fp32. With ``fp32_fallback: guided`` too,
per-token is a third choice per MatMul: each MatMul is per-call int8, per-token int8 or fp32 and each
``Attention`` int8 or fp32, chosen on validation under the same latency budget.

``outliers: split`` first moves each FFN block's outlier channels (max |x| over ``outlier_calibration`` train
examples above ``outlier_ratio`` x the median channel's, at most ``outlier_max_channels`` per input) to an fp32
side path, so that the per-call scale of the rest is set by ordinary values (``export/outlier_split.py``:
LLM.int8()'s mixed-precision decomposition, with a static channel set). The side MatMuls stay fp32 under every
other setting. With ``fp32_fallback: guided`` the guided choice runs on the split graph: its all-int8 reference
(for ``latency_ratio`` and for "never less agreement on validation") and its fp32 timing are the split files, so
``latency_ratio: 0.9`` there means 0.9x the split all-int8 speed (~0.82x plain all-int8 on MiniLM).
ZipLM's ``ort_int8`` latency runtime prices plain int8, not the split file.

``embeddings``: ``blockwise`` (default) stores the word-embedding table as uint8 codes with a scale and zero point
per 128 values of a row (``export/embedding_int8.py``), the position and token-type tables fp32; ``per_tensor`` is
ORT's ``QEmbedLayerNormalization`` (one scale per table, set by a few rows: ~5x the table error on MiniLM); ``fp32``
keeps every table fp32 (2.5x the file size on MiniLM). The speed is the same. An explicit ``op_types`` without
``EmbedLayerNormalization`` / ``Gather`` keeps the tables fp32 whatever ``embeddings`` says, and ``per_tensor`` on a
fused graph needs ``EmbedLayerNormalization`` among them; ``per_token``'s implied ``["MatMul"]`` does not override
``blockwise``. The record's ``stored`` is read back from the written file, with a warning when it differs from what
was asked. With ``fp32_fallback: guided`` the choice is scored against the graph before the tables were quantized.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

from compresslab.export.embedding_int8 import EMBEDDINGS, table_storage
from compresslab.export.ort_quant import check_op_types, read_export_config
from compresslab.failure import error_text
from compresslab.quant.guided_int8 import LATENCY_SHAPE, Sensitivity
from compresslab.registry import register_pass
from compresslab.types import OnnxModel, PassContext, PassResult, Stage
from compresslab.validate import check_bools, check_choice, check_int, coerce_enum, is_number

log = logging.getLogger(__name__)

FALLBACKS = ("none", "guided")
OUTLIERS = ("none", "split")
ACTIVATIONS = ("per_call", "per_token")
# per-token scales reach MatMulInteger only (QAttention / DynamicQuantizeMatMul take one scale per call)
PER_TOKEN_OP_TYPES = ["MatMul"]
# the ops that read embedding tables: an explicit op_types without them leaves the tables fp32
EMBEDDING_OPS = {"EmbedLayerNormalization", "Gather"}


@register_pass("ort_int8_dynamic")
@dataclass
class OrtInt8Dynamic:
    """Dynamic int8 quantization with ONNX Runtime.

    ``per_channel`` scales each output channel (better accuracy, same speed on CPU kernels);
    ``reduce_range`` uses 7-bit weights for CPUs without VNNI (avoids int16 accumulation
    overflow); ``op_types`` restricts which ops are quantized (default: all ORT supports).

    ``fp32_fallback``: ``none`` (every quantizable op int8) or ``guided`` (weight MatMuls chosen
    to stay fp32 by ``sensitivity`` on up to ``max_examples`` validation examples, under a speedup
    of at least ``latency_ratio`` x the all-int8 speedup at batch 32 x ``latency_seq`` tokens, timed
    here with ``latency_runs`` interleaved rounds; ``latency_seq`` must fit the model's position
    table). The validation-best of the guided sets and the plain all-int8 model is kept, so
    ``guided`` never keeps a model that agrees less on validation.

    ``activations``: ``per_call`` (ORT's ``DynamicQuantizeLinear``: one uint8 scale over the whole call)
    or ``per_token`` (one symmetric scale per token; ``op_types`` then defaults to ``["MatMul"]`` and may
    name only ``MatMul``). ``per_token`` with ``fp32_fallback: guided``: the guided choice per weight MatMul is
    among per-call int8, per-token int8 and fp32 (``Attention``: int8 or fp32; ``op_types`` as for per-call),
    and ``sensitivity: auto`` adds the ``single_per_call`` estimate (which needs ``per_token``).

    ``outliers``: ``none``, or ``split`` (module docstring): channels whose max |x| over ``outlier_calibration``
    seeded train examples exceeds ``outlier_ratio`` (> 1) x the median channel's, at most ``outlier_max_channels``
    per FFN input and per FFN hidden layer, go to fp32 side paths. Needs MatMul among ``op_types`` and a fused
    FFN (``MatMul -> BiasGelu|FastGelu -> MatMul``; ``optimize: true`` fuses an unfused export).

    ``embeddings``: ``blockwise`` (the word-embedding table as block-wise uint8 codes, other tables fp32),
    ``per_tensor`` (ORT's one scale per table, where ``op_types`` includes the embedding op) or ``fp32``.
    """

    per_channel: bool = True
    reduce_range: bool = False
    optimize: bool = True
    op_types: list[str] | None = None
    fp32_fallback: str = "none"
    sensitivity: Sensitivity = Sensitivity.AUTO
    latency_ratio: float = 0.9
    max_examples: int | None = None
    latency_runs: int = 10
    latency_seq: int = LATENCY_SHAPE[1]
    activations: str = "per_call"
    outliers: str = "none"
    outlier_ratio: float = 3.0
    outlier_max_channels: int = 8
    outlier_calibration: int = 256
    embeddings: str = "blockwise"

    stage: ClassVar[Stage] = Stage.ONNX
    makes_teacher: ClassVar[bool] = False
    # a zero weight quantizes to its zero point, which dequantizes to exactly 0.0 (ORT ranges always
    # include 0; symmetric int8 weights have zero point 0): the zeros of a pruned model survive
    keeps_zeros: ClassVar[bool] = True
    # settings added after runs were made, with the value those runs had (types.PASS_FLAGS): activations, the
    # outlier split (2026-12-05); embeddings: the old behaviour is per_tensor, so only a run that asks for it keeps
    # its old hash, while the default (blockwise, 2026-12-05) writes other files and gets new hashes
    identity_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({
        "activations": "per_call", "outliers": "none", "outlier_ratio": 3.0, "outlier_max_channels": 8,
        "outlier_calibration": 256, "embeddings": "per_tensor"})

    def __post_init__(self) -> None:
        check_bools(self, "per_channel", "reduce_range", "optimize")
        self.op_types = check_op_types(self, "IntegerOpsRegistry")
        check_choice(self.fp32_fallback, FALLBACKS, f"{self.name} fp32_fallback")
        self.sensitivity = coerce_enum(Sensitivity, self.sensitivity, f"{self.name} sensitivity")
        if not (is_number(self.latency_ratio) and 0.0 < self.latency_ratio <= 1.0):
            raise ValueError(f"{self.name} latency_ratio must be a number in (0, 1] (speedup kept vs all-int8), "
                             f"got {self.latency_ratio!r}")
        self.latency_ratio = float(self.latency_ratio)
        if self.max_examples is not None:
            check_int(self.max_examples, f"{self.name} max_examples")
        check_int(self.latency_runs, f"{self.name} latency_runs")
        check_int(self.latency_seq, f"{self.name} latency_seq")
        check_choice(self.activations, ACTIVATIONS, f"{self.name} activations")
        check_choice(self.outliers, OUTLIERS, f"{self.name} outliers")
        check_choice(self.embeddings, EMBEDDINGS, f"{self.name} embeddings")
        if not (is_number(self.outlier_ratio) and self.outlier_ratio > 1.0):
            raise ValueError(f"{self.name} outlier_ratio must be a number > 1 (x the median channel's max |x|), "
                             f"got {self.outlier_ratio!r}")
        self.outlier_ratio = float(self.outlier_ratio)
        check_int(self.outlier_max_channels, f"{self.name} outlier_max_channels")
        check_int(self.outlier_calibration, f"{self.name} outlier_calibration")
        if not self.outlier_ratio < float("inf"):
            raise ValueError(f"{self.name} outlier_ratio must be finite, got {self.outlier_ratio!r}")
        if self.outliers == "split" and self.op_types is not None and "MatMul" not in self.op_types:
            raise ValueError(f"{self.name} outliers=split keeps FFN MatMuls' outlier channels fp32 beside int8 "
                             f"MatMuls, but op_types {self.op_types} quantizes no MatMul")
        if self.sensitivity is Sensitivity.SINGLE_PER_CALL and (self.activations != "per_token"
                                                                or self.fp32_fallback != "guided"):
            raise ValueError(f"{self.name} sensitivity=single_per_call probes around per-token MatMuls: it needs "
                             "activations=per_token with fp32_fallback=guided")
        self._check_mode_settings()
        if self._matmul_only():
            if self.op_types is not None and self.op_types != PER_TOKEN_OP_TYPES:
                raise ValueError(f"{self.name} activations=per_token quantizes MatMul only (QAttention and "
                                 f"DynamicQuantizeMatMul take one scale per call); got op_types {self.op_types}")

    def _check_mode_settings(self) -> None:
        """ValueError for a setting of one mode changed from its default while that mode is off: it would be
        ignored, yet the run's config hash (and so its run dir) would differ from the same file made without it."""
        import dataclasses

        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        modes = (("fp32_fallback=guided", self.fp32_fallback == "guided",
                  ("sensitivity", "latency_ratio", "max_examples", "latency_runs", "latency_seq")),
                 ("outliers=split", self.outliers == "split",
                  ("outlier_ratio", "outlier_max_channels", "outlier_calibration")))
        for mode, on, keys in modes:
            changed = [f"{k}={getattr(self, k)!r}" for k in keys if not on and getattr(self, k) != defaults[k]]
            if changed:
                raise ValueError(f"{self.name} {', '.join(changed)}: applies to {mode} only, which this step does not "
                                 f"use, so it would be ignored; set {mode}, or leave it out")

    def sequence_lengths(self) -> dict[str, int]:
        """Setting (under this step) -> tokens per row it feeds the model: the guided timing shape's seq."""
        return {"latency_seq": self.latency_seq} if self.fp32_fallback == "guided" else {}

    def check_deploy_settings(self, *, export_optimize: bool, deploy_runtime: str) -> None:
        """Before any work (pipeline/preflight.py): ValueError where ``outliers: split`` could not work or would be
        dropped: an unfused graph (the split rewrites the fused FFN; this pass fuses only with its ``optimize``), or
        ``deploy.runtime=openvino``, whose int8 IR is made from the plain fp32 export, without the split."""
        if self.outliers != "split":
            return
        if not self.optimize and not export_optimize:
            raise ValueError("outliers=split rewrites the fused graph's FFN blocks, but export.optimize=false and "
                             "this step's optimize=false leave it unfused: set either to true, or outliers: none")
        if deploy_runtime == "openvino":
            raise ValueError("outliers=split changes the ONNX Runtime int8 file; deploy.runtime=openvino deploys an "
                             "int8 IR made from the plain fp32 export, without the split: use deploy.runtime=ort "
                             "(auto compares the split ORT file with the IR on validation), or outliers: none")

    def check(self, task: Any) -> None:
        """``guided`` selects on the validation split, ``outliers: split`` calibrates on train: neither may be
        empty."""
        if self.outliers == "split" and task is not None and not len(getattr(task, "train", ()) or ()):
            raise ValueError(f"{self.name} outliers=split takes its channel ranges on the train split, which is "
                             "empty (set outliers: none)")
        if self.fp32_fallback == "guided" and task is not None and not len(getattr(task, "validation", ()) or ()):
            raise ValueError(f"{self.name} fp32_fallback=guided selects on the validation split, which is empty "
                             "(set task.val_size, or fp32_fallback: none)")
        from compresslab.data.schema import TaskKind, TaskNotSupportedError

        # the guided choice keeps the int8 file's predictions close to the fp32 one's (quant/divergence.py): a bare
        # encoder has none, which it found only after the export and the int8 probes (run_outputs' refusal)
        if self.fp32_fallback == "guided" and task is not None and task.spec.kind is TaskKind.EMBEDDING:
            raise TaskNotSupportedError(f"{self.name} fp32_fallback=guided keeps the predictions of the fp32 graph; "
                                        f"task {task.spec.name!r} is an embedding task (a bare encoder has none): "
                                        "set fp32_fallback: none")

    def apply(self, model: OnnxModel, ctx: PassContext) -> PassResult:
        from compresslab.export.ort_quant import copy_model_files, ensure_fused, quantize_dynamic_int8

        model = model if isinstance(model, OnnxModel) else OnnxModel(Path(model).parent, Path(model))
        ctx.step_dir.mkdir(parents=True, exist_ok=True)
        dst = ctx.step_dir / "model.onnx"
        with tempfile.TemporaryDirectory(prefix="compresslab-fuse-") as work:
            src, fused_here = (ensure_fused(model.onnx_path, read_export_config(model.dir), work) if self.optimize
                               else (model.onnx_path, False))
            split, keep_fp32 = None, []
            if self.outliers == "split":
                src, split = self._split(Path(src), Path(work), ctx)
                keep_fp32 = list(split["side_nodes"])
            before_embeddings, embeddings = Path(src), None
            if self._embeddings_effective() != "per_tensor":
                src, embeddings = self._embeddings(Path(src), Path(work))
                keep_fp32 += embeddings.get("exclude", [])
            if self.fp32_fallback == "guided":  # writes dst: the file it scored and timed
                guided = self._guided(src, dst, model, ctx, keep_fp32, reference=before_embeddings)
                metrics = {**guided.pop("quantize_metrics"), "guided": guided}
            elif self.activations == "per_token":
                metrics = self._per_token(src, dst, work, keep_fp32)
            else:
                metrics = quantize_dynamic_int8(src, dst, per_channel=self.per_channel,
                                                reduce_range=self.reduce_range, op_types=self.op_types,
                                                nodes_to_exclude=keep_fp32)
        if split is not None:
            metrics["outlier_split"] = split
        # what the file stores, read back from it: an op_types or per_token setting can keep the tables fp32
        stored = table_storage(dst)
        record = {k: v for k, v in (embeddings or {}).items() if k != "embeddings"}
        metrics["embeddings"] = {**record, "requested": self.embeddings, "stored": stored}
        if stored != self.embeddings:  # one warning, with every reason that applies
            log.warning("%s embeddings=%s: the deployed file stores its word table as %s (%s)", self.name,
                        self.embeddings, stored, "; ".join(self._storage_reasons(record.get("fallback_reason"))))
        # against the file this step was given, not an intermediate rewrite of it (split, embeddings, fusion)
        metrics["size_bytes_input"] = Path(model.onnx_path).stat().st_size
        if metrics.get("size_bytes"):
            metrics["size_ratio"] = metrics["size_bytes"] / metrics["size_bytes_input"]
        copy_model_files(model.dir, ctx.step_dir)
        metrics["fused_before_quantization"] = fused_here
        # what the written file does: a guided choice may keep every MatMul per call (all-int8 won on validation)
        activations = self.activations
        if "guided" in metrics and self.activations == "per_token":
            activations = "per_token" if metrics["guided"]["per_token_matmuls"] else "per_call"
            metrics["activations_requested"] = self.activations
        metrics["activations"] = activations
        structure: dict[str, Any] = {"weight_bits": 8, "activation_bits": 8, "scheme": "ort_dynamic",
                                     "activations": activations, "outliers": self.outliers,
                                     "embeddings": stored}
        if split is not None:
            structure["outlier_side_matmuls"] = list(split["side_nodes"])  # fp32, beside the int8 ones
        if "guided" in metrics:
            structure["fp32_matmuls"] = list(metrics["guided"]["fp32_matmuls"])
            if self.activations == "per_token":
                structure["per_token_matmuls"] = list(metrics["guided"]["per_token_matmuls"])
        return PassResult(metrics=metrics, onnx_path=str(dst), structure=structure)

    def _split(self, src: Path, work: Path, ctx: PassContext) -> tuple[Path, dict[str, Any]]:
        """``src`` with its FFN outlier channels on fp32 side paths (calibrated on train), and the record."""
        import torch

        from compresslab.export.outlier_split import split_outliers

        batches = ctx.calibration_batches(self.outlier_calibration, setting=f"{self.name}.outlier_calibration")
        feeds = [{k: v.numpy() for k, v in b.items() if k != "labels"}
                 for b in ctx.track(batches, desc="outlier calibration")]
        out = work / "outlier_split.onnx"
        record = split_outliers(src, out, feeds, ratio=self.outlier_ratio, max_channels=self.outlier_max_channels,
                                threads=torch.get_num_threads())
        record["calibration_examples"] = sum(len(next(iter(f.values()))) for f in feeds)
        moved = record["split_input_channels"] + record["split_neurons"]
        if not moved:
            log.warning("%s outliers=split: no channel's max |x| exceeds outlier_ratio=%g x its median in any of "
                        "%d FFN blocks, so the file is plain int8 (lower outlier_ratio to split some)", self.name,
                        self.outlier_ratio, len(record["blocks"]))
        else:
            log.info("%s outliers=split: %d input channels and %d FFN neurons over %d blocks on fp32 side paths "
                     "(ratio %g, at most %d each)", self.name, record["split_input_channels"], record["split_neurons"],
                     len(record["blocks"]), self.outlier_ratio, self.outlier_max_channels)
        return out, record

    def own_settings(self) -> list[str]:
        """``key=value`` of each setting that makes this pass's file ours rather than ORT's ``quantize_dynamic``
        with its own options (per_channel, reduce_range, op_types, fp32 tables through ``nodes_to_exclude``):
        our fp32 fallback choice, per-token scales, the outlier split, block-wise word embeddings as applied
        (an ``op_types`` without the embedding ops keeps them fp32). [] for one call of ORT's tool. The peer
        suite's rule (benchmarks/suite_method.py); extend it with every setting of ours added here."""
        own = {"fp32_fallback": self.fp32_fallback != "none", "activations": self.activations != "per_call",
               "outliers": self.outliers != "none", "embeddings": self._embeddings_effective() == "blockwise"}
        return [f"{k}={getattr(self, k)}" for k, on in own.items() if on]

    def _matmul_only(self) -> bool:
        """Plain per-token int8: ORT quantizes MatMul only (``PER_TOKEN_OP_TYPES``) unless ``op_types`` says more."""
        return self.activations == "per_token" and self.fp32_fallback != "guided"

    def _embeddings_effective(self) -> str:
        """``embeddings`` as applied: an explicit ``op_types`` without the embedding ops keeps the tables fp32 (it
        quantizes nothing else), whatever ``embeddings`` says; ``per_token``'s implied ``["MatMul"]`` does not."""
        if self.op_types is not None and not set(self.op_types) & EMBEDDING_OPS:
            return "fp32"
        if self.embeddings == "per_tensor" and self.op_types is None and self._matmul_only():
            return "fp32"  # ORT quantizes MatMul only there: its tables stay fp32
        return self.embeddings

    def _storage_reasons(self, fallback: str | None) -> list[str]:
        """Why the written file's word table is not stored as ``embeddings`` asks."""
        reasons = [f"the block-wise rewrite did not apply: {fallback}"] if fallback else []
        if self.op_types is not None:
            reasons.append(f"op_types {self.op_types} leave the embedding op to fp32 or ORT")
        elif self._matmul_only():
            reasons.append("per_token quantizes MatMul only")
        else:
            reasons.append("ORT's quantizer left the embedding op as it was")
        return reasons

    def _embeddings(self, src: Path, work: Path) -> tuple[Path, dict[str, Any]]:
        """``src`` with block-wise int8 word embeddings (``blockwise``), or as it is (``fp32``); the record, whose
        ``exclude`` names the embedding nodes the quantizer must leave alone. A graph without a word lookup the
        rewrite knows falls back to ORT's per-tensor tables, with a warning (the step runs after all the torch
        passes: failing there would throw their work away for a setting about 1 % of the file)."""
        import onnx

        from compresslab.export.embedding_int8 import EmbeddingError, blockwise_word_embeddings, embedding_readers

        if self._embeddings_effective() == "fp32":
            readers = embedding_readers(onnx.load(str(src), load_external_data=False))[1]
            return src, {"embeddings": "fp32", "exclude": readers}
        out = work / "embeddings_int8.onnx"
        try:
            return out, {"embeddings": "blockwise", **blockwise_word_embeddings(src, out)}
        except EmbeddingError as e:
            log.info("%s embeddings=blockwise: %s; the tables are left to ORT's quantizer", self.name, e)
            return src, {"embeddings": "per_tensor", "requested": "blockwise",
                         "fallback_reason": error_text(e, typed=False)}

    def _per_token(self, src: Path, dst: Path, work: str, keep_fp32: Sequence[str] = ()) -> dict[str, Any]:
        """Dynamic int8 of the MatMuls, then every per-call activation scale rewritten per token."""
        from compresslab.export.ort_quant import quant_metrics, quantize_dynamic_int8
        from compresslab.export.per_token_int8 import per_token_activations

        per_call = Path(work) / "per_call.onnx"
        quantize_dynamic_int8(src, per_call, per_channel=self.per_channel, reduce_range=self.reduce_range,
                              op_types=self.op_types or PER_TOKEN_OP_TYPES, nodes_to_exclude=list(keep_fp32))
        rewrite = per_token_activations(per_call, dst)
        # sizes and op counts of the file deployed, not of the per-call intermediate
        return {**quant_metrics(Path(src), dst, method="dynamic_per_token", per_channel=self.per_channel,
                                reduce_range=self.reduce_range), "per_token": rewrite}

    def _guided(self, src: Path, dst: Path, model: OnnxModel, ctx: PassContext,
                keep_fp32: Sequence[str] = (), reference: Path | None = None) -> dict[str, Any]:
        """Quantize ``src`` into ``dst`` with the fp32 set chosen on validation; the record of ``guided_int8``."""
        import torch

        from compresslab.data.loaders import make_loader
        from compresslab.models.loading import check_max_length
        from compresslab.quant.guided_int8 import guided_int8

        config = read_export_config(model.dir)
        # the run's preflight checked this against config.json; a direct caller gets the same error here,
        # before the sensitivity work, instead of ORT's index error from the embedding when it is timed
        check_max_length(self.latency_seq, config, f"{self.name} latency_seq")
        examples = list(ctx.task.validation)[: self.max_examples]
        loader = make_loader(examples, ctx.tokenizer, ctx.batch_size, ctx.max_length, shuffle=False,
                             kind=ctx.task.spec.kind)
        feeds = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in loader]
        vocab = config.get("vocab_size")
        return guided_int8(src, dst, feeds, sensitivity=self.sensitivity, latency_ratio=self.latency_ratio,
                           threads=torch.get_num_threads(), latency_runs=self.latency_runs, vocab_size=vocab,
                           per_channel=self.per_channel, reduce_range=self.reduce_range, op_types=self.op_types,
                           track=ctx.track, latency_shape=(LATENCY_SHAPE[0], self.latency_seq),
                           per_token=self.activations == "per_token", exclude=list(keep_fp32), reference=reference)
