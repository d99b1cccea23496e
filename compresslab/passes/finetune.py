"""``finetune``: produce the dense teacher for a task, cached by content hash.

Presets (MEASURE.md "Teachers"): ``quick`` for the demo (a 16k-example slice, one epoch, a few
minutes on 2 cores) and ``bench`` (the full train split, the recipe below); ``bench_small`` is the
bench recipe with 5 epochs for the small GLUE tasks, where one epoch is too few steps. Explicit fields
override the preset. The cache key covers the content of every model file (config, tokenizer,
each weight shard or ``pytorch_model.bin``), the examples trained and validated on, and every
setting that changes the result, so a cached teacher is reused only when it would be identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from compresslab.manifest import (
    atomic_write_json, examples_sha256, model_files_sha256, read_json, sha256_file, stable_hash, state_dict_sha256,
    tokenizer_sha256)
from compresslab.registry import register_pass
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import check_positive, check_positive_int, choice_hint, is_number

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    # ~16k examples x 1 epoch: the demo teacher
    "quick": {"lr": 5e-5, "epochs": 1.0, "batch_size": 32, "max_train_examples": 16000, "warmup_ratio": 0.06},
    # full SST-2 train (minus the validation carve), 1 epoch (~2,070 steps), linear decay, 6% warm-up.
    # One epoch because 2 cores give ~0.6 s/step; 2 epochs would take ~45 min uncontended.
    "bench": {"lr": 5e-5, "epochs": 1.0, "batch_size": 32, "max_train_examples": None, "warmup_ratio": 0.06},
    # the bench recipe for the small GLUE tasks (MRPC 3.7k, RTE 2.5k, STS-B 5.7k, CoLA 8.6k train examples):
    # one epoch is 80-270 steps there, too few to fine-tune (an MRPC teacher stays near the majority class),
    # so 5 epochs (~400-1,340 steps, 5-15 min on 2 cores) with 10% warm-up, as GLUE recipes for small
    # encoders do. Used by benchmarks/suite.yaml for those tasks; every cell of a task shares its teacher.
    "bench_small": {"lr": 5e-5, "epochs": 5.0, "batch_size": 32, "max_train_examples": None, "warmup_ratio": 0.1},
    # a handful of steps, for tests and debug=smoke
    "smoke": {"lr": 1e-4, "epochs": 1.0, "batch_size": 16, "max_train_examples": 64, "warmup_ratio": 0.0},
}


@register_pass("finetune")
@dataclass
class Finetune:
    """Fine-tune the dense model on the task (a no-op for embedding tasks: the embedder is its own teacher)."""

    preset: str = "quick"
    lr: float | None = None
    epochs: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    max_train_examples: int | None = None
    warmup_ratio: float | None = None
    cache: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # never read: refused unless empty (old pass.json has {})

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = True  # its output is the run's teacher
    # the recipe fields (listed in its YAML, null, since 2026-12-06): earlier runs had them absent
    identity_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {k: None for k in ("lr", "epochs", "steps", "batch_size", "max_train_examples", "warmup_ratio")})

    def __post_init__(self) -> None:
        if self.overrides:  # it was accepted and silently ignored since the first version
            raise ValueError(f"finetune.overrides={self.overrides!r} is not read by the teacher's training: set lr, "
                             "epochs, steps, batch_size, max_train_examples or warmup_ratio on the pass instead")
        if self.preset not in PRESETS:
            raise ValueError(f"finetune preset={self.preset!r}; allowed: {', '.join(PRESETS)}"
                             f"{choice_hint(self.preset, PRESETS)}")
        for name in ("lr", "epochs"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), f"finetune {name}")
        for name in ("steps", "batch_size", "max_train_examples"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), f"finetune {name}")
        if self.warmup_ratio is not None and not (is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            raise ValueError(f"finetune warmup_ratio must be in [0, 1) (a fraction of the steps), "
                             f"got {self.warmup_ratio!r}")

    def check(self, task: Any) -> None:
        """Nothing to check up front: an embedding task makes this a no-op, any other has a train split."""

    def recipe(self) -> dict[str, Any]:
        """The preset with explicit fields applied: exactly what trains the teacher."""
        r = dict(PRESETS[self.preset])
        for k in ("lr", "epochs", "steps", "batch_size", "max_train_examples", "warmup_ratio"):
            if getattr(self, k) is not None:
                r[k] = getattr(self, k)
        r.setdefault("steps", None)
        return r

    def cache_key(self, ctx: PassContext, model: nn.Module | None = None) -> str:
        """The teacher's identity, by content: every file of the model source (config, tokenizer,
        each weight shard; a model given in memory, ``ctx.model_source`` empty: ``model``'s weights),
        the train and validation examples as parsed, the label names, and every setting that changes
        the result. Paths are not part of it. ValueError with neither a source nor a model."""
        if ctx.model_source:
            model_id: dict[str, Any] = {"files": model_files_sha256(ctx.model_source)}
        elif model is not None:
            model_id = {"state_dict": state_dict_sha256(model), "tokenizer": tokenizer_sha256(ctx.tokenizer)}
        else:
            raise ValueError("finetune cache key: no model source and no model to identify the teacher by")
        data = {"examples": examples_sha256(ctx.task.train, ctx.task.validation),
                "labels": list(ctx.task.spec.label_names)}
        return stable_hash({"model": model_id, "task": ctx.task.spec.name, "data": data, "max_length": ctx.max_length,
                            "seed": ctx.seed, "recipe": self.recipe(), "version": 2}, n=16)

    def _legacy_key(self, ctx: PassContext) -> str | None:
        """The version-1 key of this teacher (model.safetensors + data file hashes; tokenizer, config and
        other weight files not covered), for sources that hold a ``model.safetensors``; else None.

        Teachers cached before keys covered every model file (2026-11) are adopted once under the new
        key instead of being trained again (the bench teacher takes tens of minutes)."""
        weights = Path(ctx.model_source) / "model.safetensors" if ctx.model_source else None
        if weights is None or not weights.is_file():
            return None  # version 1 keyed such sources by path: never trusted
        info = ctx.task.info
        if info.get("val_carve", "random") != "random":
            return None  # version 1 predates val_carve: its teachers saw another carve's validation examples
        files = {split: f.get("sha256") for split, f in (info.get("files") or {}).items()}
        data = {k: info.get(k) for k in ("val_size", "val_seed", "max_train", "sizes")}
        return stable_hash({"model": sha256_file(weights), "task": ctx.task.spec.name, "files": files, "data": data,
                            "max_length": ctx.max_length, "seed": ctx.seed, "recipe": self.recipe(),
                            "version": 1}, n=16)

    def _adopt_legacy(self, ctx: PassContext, cached: Path) -> None:
        """Link a version-1 cache entry of this teacher into ``cached`` (its new, content-keyed place)."""
        import os
        import shutil

        old_key = self._legacy_key(ctx)
        old = cached.parent / old_key if old_key else None
        if old is None or not (old / "teacher.json").is_file() or cached.exists():
            return
        tmp = cached.with_name(f".{cached.name}.adopt{os.getpid()}")
        shutil.copytree(old, tmp, copy_function=os.link)  # same cache dir: links, no second copy
        os.replace(tmp, cached)
        log.warning("finetune: adopted the teacher cached under the older key %s as %s (its weights and data files "
                    "match by content; its tokenizer and config files were not part of that key)", old.name,
                    cached.name)

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        from compresslab.data.tasks import TaskKind

        if ctx.task.spec.kind == TaskKind.EMBEDDING:
            return PassResult(metrics={"cached": False, "trained": False},
                              skipped={"model": "embedding task: the pretrained embedder is its own teacher"})
        key = self.cache_key(ctx, model)
        cached = ctx.cache_dir / "teachers" / key if (self.cache and ctx.cache_dir) else None
        if cached is not None:
            self._adopt_legacy(ctx, cached)
        if cached is not None and (cached / "teacher.json").is_file():
            from compresslab.checkpoint import load

            teacher = load(cached)
            if all(bool(torch.isfinite(t).all()) for t in teacher.state_dict().values() if t.is_floating_point()):
                log.info("finetune: reusing cached teacher %s", cached)
                model.load_state_dict(teacher.state_dict())
                info = read_json(cached / "teacher.json")
                return PassResult(metrics={**info["metrics"], "cached": True, "cache_key": key,
                                  "cache_path": str(cached)})
            # written before training stopped on a NaN loss (a float16 source trained in float16): never reuse it
            log.warning("finetune: the cached teacher %s holds NaN/inf weights; training a new one", cached)
            (cached / "teacher.json").unlink()
        metrics = self._train(model, ctx)
        if cached is not None:
            from compresslab.checkpoint import save

            save(model, cached, ctx.tokenizer)
            atomic_write_json(cached / "teacher.json", {"metrics": metrics, "recipe": self.recipe(), "key": key})
        return PassResult(metrics={**metrics, "cached": False, "cache_key": key,
                                   "cache_path": str(cached) if cached is not None else None})

    def _train(self, model: nn.Module, ctx: PassContext) -> dict[str, Any]:
        from compresslab.eval.evaluate import predict, torch_forward
        from compresslab.training import TrainConfig, TaskLoss, train

        r = self.recipe()
        loader = ctx.train_loader(batch_size=r["batch_size"], max_examples=r["max_train_examples"])
        cfg = TrainConfig(lr=r["lr"], epochs=r["epochs"], steps=r["steps"], batch_size=r["batch_size"],
                          warmup_ratio=r["warmup_ratio"], seed=ctx.seed, device=ctx.device.type)
        res = train(model, loader, cfg, [TaskLoss()], progress=ctx.progress, desc="finetune")
        val = predict(torch_forward(model), ctx.task.spec, ctx.task.validation, ctx.tokenizer,
                      max_length=ctx.max_length) if ctx.task.validation else None
        return {"train_steps": res.steps, "train_s": round(res.wall_s, 1), "train_examples": len(loader.dataset),
                "final_loss": res.losses[-1] if res.losses else None,
                "validation": val.metrics if val else None, "recipe": r}
