"""The state of one run while it executes: data, model, teacher, and the step loop with resume."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from compresslab.manifest import RunManifest
from compresslab.types import OnnxModel, PassContext, Stage

log = logging.getLogger(__name__)


def tqdm_progress(iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any:
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=2.0)


@dataclass
class RunState:
    cfg: DictConfig
    task: Any
    model_source: Path
    device: torch.device
    tokenizer: Any = None
    model: nn.Module | None = None
    teacher: nn.Module | None = None
    onnx: OnnxModel | None = None
    scores: dict[str, Any] = field(default_factory=dict)  # label -> Scored (dev), for agreement

    @classmethod
    def prepare(cls, cfg: DictConfig, steps: list) -> "RunState":
        """Cheap checks before anything expensive: model source, architecture, data files, budgets."""
        from compresslab.data.tasks import load_task, resolve_data_root
        from compresslab.models.loading import check_model_source, resolve_source

        src = resolve_source(cfg.model.source)
        check_model_source(src)
        t = cfg.task
        generic = OmegaConf.to_container(t.generic, resolve=True) if t.get("generic") else None
        root = None if generic else resolve_data_root(cfg.data.get("root"))
        task = load_task(t.name, root, val_size=t.get("val_size"), seed=int(cfg.seed),
                         max_train=t.get("max_train"), max_dev=t.get("max_dev"), generic=generic)
        for s in steps:  # passes that check data sizes etc. before the run starts
            if hasattr(s.pass_, "check"):
                s.pass_.check(task)
        if cfg.bench.get("enabled", True):
            from compresslab.stages_deepsparse import check_requested

            check_requested(cfg.bench)  # bench.deepsparse.enabled=true without a DeepSparse venv
        dev = cfg.get("device", "auto")
        device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev))
        return cls(cfg=cfg, task=task, model_source=src, device=device)

    # ---------------------------------------------------------------- setup
    def new_manifest(self, run_dir: Path, config_hash: str) -> RunManifest:
        from compresslab.bench.env import hardware_fingerprint

        c = self.cfg
        return RunManifest.create(
            run_dir, pipeline=str(c.pipeline.name), config_hash=config_hash, model_id=str(c.model.get("name", c.model.source)),
            model_source=str(self.model_source), task=self.task.spec.name, seed=int(c.seed),
            config=OmegaConf.to_container(c, resolve=True), hardware=hardware_fingerprint(),
            data=self.task.info)

    def context(self, run_dir: Path, step_dir: Path) -> PassContext:
        c = self.cfg
        return PassContext(tokenizer=self.tokenizer, task=self.task, run_dir=run_dir, step_dir=step_dir,
                           device=self.device, seed=int(c.seed), teacher=self.teacher,
                           max_length=int(c.task.max_length), batch_size=int(c.budget.batch_size),
                           progress=tqdm_progress, cache_dir=Path(c.paths.cache_dir), model_source=str(self.model_source))

    def load_initial(self) -> None:
        from compresslab.models.loading import load_pretrained

        spec = self.task.spec
        self.model, self.tokenizer = load_pretrained(self.model_source, kind=spec.kind.value, num_labels=spec.num_labels)
        torch.manual_seed(int(self.cfg.seed))
        if hasattr(self.model, "classifier"):  # fresh head, seeded: the run is reproducible
            self.model.classifier.apply(self.model._init_weights)

    # ---------------------------------------------------------------- steps
    def execute(self, run_dir: Path, manifest: RunManifest, steps: list) -> Path:
        from compresslab import pipeline as P
        from compresslab import stages as run_fixed_stages

        self.load_initial()
        done = P.done_steps(manifest)
        stop_after = self.cfg.run.get("stop_after")
        ran_now = 0
        for step in steps:
            step_dir = run_dir / "steps" / step.dir_name
            if step.index in done:
                self._restore(step, done[step.index], run_dir)
                continue
            if stop_after is not None and len(P.done_steps(manifest)) >= int(stop_after):
                manifest.data["status"] = "stopped"
                manifest.save()
                log.info("stopping after %d step(s) (run.stop_after); rerun the same command to resume", stop_after)
                return run_dir
            if step.pass_.stage == Stage.ONNX and self.onnx is None:
                self.onnx = run_fixed_stages.export(self, run_dir, manifest)
            self._run_step(step, step_dir, run_dir, manifest)
            ran_now += 1
        return run_fixed_stages.finish(self, run_dir, manifest)

    def _run_step(self, step: Any, step_dir: Path, run_dir: Path, manifest: RunManifest) -> None:
        from compresslab import pipeline as P
        from compresslab.models.loading import count_params, save
        from compresslab.stages import score_torch

        log.info("step %d: %s (%s)", step.index, step.name, step.pass_.stage.value)
        rec = P.step_record(step, step.pass_.stage)
        prev = manifest.steps[-1].metrics_after if manifest.steps else {}
        rec.metrics_before = prev
        manifest.set_step(rec)
        manifest.save()
        t0 = time.perf_counter()
        step_dir.mkdir(parents=True, exist_ok=True)
        ctx = self.context(run_dir, step_dir)
        if step.pass_.stage == Stage.TORCH:
            result = step.pass_.apply(self.model, ctx)
            self.model.eval()
            if step.name == "finetune" or getattr(step.pass_, "name", "") == "finetune":
                self.teacher = self._frozen(self.model)
            save(self.model, step_dir, self.tokenizer)
            if result.metrics.get("sparsity"):  # also the deployable sparse format (bitmask + int8)
                from compresslab.models.sparse_format import save_sparse

                save_sparse(self.model, step_dir)
            rec.metrics_after = {**score_torch(self, f"step:{step.name}"), "params": count_params(self.model),
                                 "size_bytes": (step_dir / "model.safetensors").stat().st_size}
        else:
            result = step.pass_.apply(self.onnx, ctx)
            if not result.onnx_path:
                raise P.PipelineError(f"ONNX pass {step.name!r} returned no onnx_path")
            self.onnx = OnnxModel(dir=step_dir, onnx_path=Path(result.onnx_path))
            rec.metrics_after = {"size_bytes": Path(result.onnx_path).stat().st_size}
        for mod, why in result.skipped.items():
            log.warning("step %s skipped %s: %s", step.name, mod, why)
        rec.result = result.to_dict()
        if result.onnx_path:
            rec.result["onnx_path"] = str(Path(result.onnx_path).relative_to(run_dir))
        P.finish_step(manifest, rec, step_dir, t0)

    def _restore(self, step: Any, rec: Any, run_dir: Path) -> None:
        """Bring the in-memory state to what it was right after a finished step."""
        from compresslab.models.loading import load

        log.info("step %d: %s already done, resuming past it", step.index, step.name)
        if rec.stage == Stage.TORCH.value:
            self.model = load(run_dir / rec.dir)
            if step.name == "finetune":
                self.teacher = self._frozen(self.model)
        else:
            self.onnx = OnnxModel(dir=run_dir / rec.dir, onnx_path=run_dir / rec.result["onnx_path"])

    @staticmethod
    def _frozen(model: nn.Module) -> nn.Module:
        t = copy.deepcopy(model).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        return t

    def teacher_or_initial(self) -> nn.Module:
        """The teacher; for pipelines without a finetune step (embeddings), the dense input model."""
        if self.teacher is None:
            from compresslab.models.loading import load_pretrained

            spec = self.task.spec
            m, _ = load_pretrained(self.model_source, kind=spec.kind.value, num_labels=spec.num_labels)
            self.teacher = self._frozen(m)
        return self.teacher
