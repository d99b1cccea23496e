"""The eval and size stages: scores of the teacher, the final torch model and the exported files on
the eval split (``eval.split``: dev is reported, validation is what a search selects on), and the
deployed bytes per file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compresslab.data.loaders import count_and_say
from compresslab.manifest import RunManifest, atomic_write_json
from compresslab.pipeline.stage_files import record_stage
from compresslab.pipeline.state import RunState
from compresslab.pipeline.teacher_files import teacher_onnx

log = logging.getLogger(__name__)

def _kw(state: RunState) -> dict[str, int]:
    return dict(batch_size=state.settings.eval.batch_size, max_length=state.settings.max_length)


def teacher_scored(state: RunState) -> Any:
    """The teacher's predictions on the eval split (computed once per run): the agreement reference. A teacher no
    better than chance is logged then, when it is made (the report's Summary says it again)."""
    from compresslab.eval.evaluate import predict, torch_forward

    if "teacher_torch" not in state.scores:
        state.scores["teacher_torch"] = predict(torch_forward(state.teacher_or_initial()), state.task.spec,
                                                state.eval_examples, state.tokenizer, **_kw(state))
        _warn_if_chance(state)
    return state.scores["teacher_torch"]


def _chance_facts(scored: Any, spec: Any) -> tuple[dict[str, Any], float | None]:
    """The teacher's record as the report reads it (``compare``'s metrics, ``predicted_classes``) and the eval split's
    majority-class share (classification only, else None)."""
    from compresslab.data.tasks import TaskKind
    from compresslab.eval.evaluate import compare, majority_share

    share = majority_share(scored) if spec.kind == TaskKind.CLASSIFICATION else None
    return compare(scored, None, spec), share


def _warn_if_chance(state: RunState) -> None:
    """Log a teacher not distinguishable from always predicting the majority class, predicting one class, or with a
    correlation <= 0 (report/verdicts.weak_teacher, and its teacher_fix in the terms of the entry point that ran):
    every later score is compared with it, so the run's verdicts mean nothing."""
    from compresslab.report.verdicts import teacher_fix, weak_teacher

    spec, scored = state.task.spec, state.scores["teacher_torch"]
    record, share = _chance_facts(scored, spec)
    why = weak_teacher(record, spec.primary_metric, share, n=len(scored.labels))
    if why:
        fix = teacher_fix(given=state.input_is_teacher or state.teacher_as_given, api=state.api)
        log.warning("teacher: no better than chance on the %d eval examples: %s. Every score of this run is compared "
                    "with it, so no verdict of the run says anything about the compression: %s", len(scored.labels),
                    why, fix)


def _warn_if_one_class(models: dict[str, Any], share: float | None, n: int) -> None:
    """Log a deployed classifier that predicts one class where the eval split has more (report/verdicts.one_class),
    unless the teacher already does (its own warning said so)."""
    from compresslab.report.verdicts import one_class

    if one_class(models.get("deployed") or {}, share) and not one_class(models.get("teacher_torch") or {}, share):
        log.warning("eval: the deployed model predicts the same class for every one of the %d eval examples "
                    "(accuracy %.4f): the compression left a constant model, whatever its score against the teacher",
                    n, models["deployed"].get("accuracy", float("nan")))


def score_torch(state: RunState, label: str) -> dict[str, Any]:
    """Eval-split score of the current torch model (+ agreement with the teacher): reported, never
    selected on; ``{}`` when eval is off."""
    from compresslab.eval.evaluate import compare, predict, torch_forward

    if not state.settings.eval.enabled:
        return {}
    spec = state.task.spec
    scored = predict(torch_forward(state.model), spec, state.eval_examples, state.tokenizer, **_kw(state))
    teacher_scored(state)
    state.scores[label] = scored
    return compare(scored, state.scores["teacher_torch"], spec)


def evaluate(state: RunState, run_dir: Path, manifest: RunManifest, threads: int) -> None:
    """Score teacher, final torch model, ort_fp32 and the deployed artifact on the eval split (an OpenVINO
    IR when deploy chose it: then the pipeline's ONNX file is scored as ``deployed_onnx_ort``). ONNX files
    whose outputs depend on the batch (ORT dynamic int8) are also scored one sentence per call
    (``eval.batch_dependence``, on by default): ``batch_dependence.<label>`` in the section."""
    from compresslab.eval.evaluate import compare, onnx_forward, predict, torch_forward
    from compresslab.eval.onnx_runner import OnnxRunner

    spec = state.task.spec
    kw = _kw(state)
    dev = state.eval_examples
    split = state.settings.eval.split
    log.info("eval: scoring teacher, final torch model and ONNX files on %s %s (%d examples)", spec.name, split,
             len(dev))
    scored = {"teacher_torch": teacher_scored(state)}
    scored["torch_final"] = predict(torch_forward(state.model), spec, dev, state.tokenizer, **kw)
    dep = manifest.data.get("export", {}).get("deployed") or {}
    on_ov = dep.get("runtime") == "openvino"  # the deployed artifact is an OpenVINO IR (deploy stage)
    onnx_label = "deployed_onnx_ort" if on_ov else "deployed"
    files = {"ort_fp32": teacher_onnx(run_dir, manifest), onnx_label: state.onnx.onnx_path}
    if files[onnx_label] == files["ort_fp32"]:
        files.pop(onnx_label)
    batch_dep: dict[str, Any] = {}
    for label, path in files.items():
        forward = onnx_forward(OnnxRunner(path, threads=threads))
        scored[label] = predict(forward, spec, dev, state.tokenizer, **kw)
        found = score_batch_dependence(forward, path, scored[label], state, label)
        if found:
            batch_dep[label] = found
    if on_ov:
        scored["deployed"] = predict(onnx_forward(_openvino_runner(run_dir / dep["path"], threads, dep["precision"])),
                                     spec, dev, state.tokenizer, **kw)
    if "deployed" not in scored:
        scored["deployed"] = scored["ort_fp32"]
    ref = scored["teacher_torch"]
    models = {k: compare(v, ref, spec) for k, v in scored.items()}
    _, share = _chance_facts(ref, spec)
    _warn_if_one_class(models, share, len(dev))
    section = {"split": split, "n": len(dev), "primary_metric": spec.primary_metric, "models": models,
               **({"majority_share": share} if share is not None else {}),
               "deployed_path": dep.get("path") or str(Path(state.onnx.onnx_path).relative_to(run_dir)),
               "deployed_runtime": dep.get("runtime", "ort")}
    if on_ov:
        section["deployed_precision"] = dep.get("compiled_precision")
    if batch_dep:
        section["batch_dependence"] = batch_dep
    section["rows"] = write_rows(state, run_dir)
    # how many scored rows were cut at max_length (tokenizing cuts silently): beside n in the report
    section["truncated"] = count_and_say(dev, state.tokenizer, state.settings.max_length, split, kind=spec.kind)
    manifest.data["eval"] = section
    atomic_write_json(run_dir / "eval" / "metrics.json", section)
    record_stage(manifest, run_dir, "eval")
    manifest.save()


ROWS_FILE = "rows.json"


def write_rows(state: RunState, run_dir: Path) -> str:
    """Write ``eval/rows.json`` (atomically): which rows of which file the eval split holds, so a reader rebuilds
    the scored examples without compresslab: the positions a seeded ``task.max_dev`` subset (``debug=smoke``)
    kept, or ``"all"``. Positions are 0-based among the file's examples as read: data rows in file order, the
    header and blank lines not counted. The validation split is a seeded carve of train, named but not listed.
    Returns the file's path relative to the run dir (the eval section's ``rows``)."""
    split = state.settings.eval.split
    info = state.task.info
    record: dict[str, Any] = {"split": split, "n": len(state.eval_examples)}
    if split == "dev":
        kept = state.task.rows.get("dev")
        record.update({"file": (info.get("files") or {}).get("dev"), "max_dev": info.get("max_dev"),
                       "seed": info.get("val_seed"), "rows": "all" if kept is None else kept,
                       "indexing": "0-based positions among the file's examples: data rows in file order, "
                                   "header and blank lines not counted"})
    else:
        record.update({"file": (info.get("files") or {}).get("train"), "rows": None,
                       "how": f"the validation carve of train ({info.get('val_carve')}, seed {info.get('val_seed')}, "
                              f"{info.get('val_size')} examples): rebuilt by compresslab.data.load_task"})
    path = run_dir / "eval" / ROWS_FILE
    atomic_write_json(path, record)
    return str(path.relative_to(run_dir))


def score_batch_dependence(forward: Any, path: Path, batched: Any, state: RunState,
                           label: str) -> dict[str, Any] | None:
    """For a file whose outputs depend on the batch (a dynamic per-call activation scale), its batch-1 scores
    against the batched ones (eval/batch_dependence.py); None for a file that depends on each sentence alone,
    or when ``eval.batch_dependence`` is off. The per-call range spans every token of the call, pad positions
    included, so the labels depend on the batchmates and on the padding: the record says how the batched score was
    padded (``padding``: ``longest``, each batch to its longest sentence, as the eval loader pads)."""
    from compresslab.eval.batch_dependence import batch_dependence, batch_dependent_ops

    if not state.settings.eval.batch_dependence:
        return None
    ops = batch_dependent_ops(path)
    if not ops:
        return None
    kw = _kw(state)
    rec = {"ops": ops, "padding": "longest",
           **batch_dependence(forward, state.task.spec, state.eval_examples, state.tokenizer, batched,
                              batch_size=kw["batch_size"], max_length=kw["max_length"],
                              reference=state.scores.get("teacher_torch"))}
    if rec.get("flips") or abs(rec["score_b1"] - rec["score_batched"]) >= 1e-4:
        from compresslab.data.tasks import TaskKind

        # a regression score or an embedding is no label: its values move (report/summary says the same)
        outputs = "labels" if state.task.spec.kind == TaskKind.CLASSIFICATION else "outputs"
        log.warning("eval: %s (%s) takes one dynamic activation range per call, over every token in it, padding "
                    "included, so its %s depend on the other sentences of the batch and on how far it is padded: "
                    "score %.4f at batch %d (padded to the longest sentence), %.4f one sentence per call%s",
                    label, ", ".join(ops), outputs, rec["score_batched"], rec["batch_size"], rec["score_b1"],
                    f"; {rec['flips']} of {rec['n']} labels differ" if "flips" in rec else "")
    return rec


def _openvino_runner(xml: Path, threads: int, precision: str) -> Any:
    """The deployed OpenVINO IR, compiled at the deploy precision (scores come from that artifact)."""
    from compresslab.bench.openvino_runner import OpenVinoRunner

    return OpenVinoRunner(xml, threads, precision)


def sizes(state: RunState, run_dir: Path, manifest: RunManifest) -> None:
    """Deployed bytes for the encoder and the whole model, per exported file.

    ``deployed`` is the artifact the run ships: the pipeline's ONNX file on ORT, or, when the deploy stage
    chose OpenVINO, its IR (``.xml`` + ``.bin`` bytes; an IR has no per-part breakdown here, so only
    ``total``; ``source``: the file the IR was made from) with the pipeline's ONNX file as ``deployed_onnx``,
    which is not the IR's source when OpenVINO cannot read it (ORT's dynamic int8: the IR is then a static int8
    of the final model's fp32 export). An n-bit ONNX file deployed as an fp32 IR is as large as the IR, not as
    the file it was converted from.
    """
    from compresslab.export.size import onnx_size_breakdown

    out: dict[str, Any] = {}
    dep = (manifest.data.get("export") or {}).get("deployed") or {}
    ir = dep.get("runtime") == "openvino"
    onnx_label = "deployed_onnx" if ir else "deployed"
    for label, path in (("ort_fp32", teacher_onnx(run_dir, manifest)), (onnx_label, state.onnx.onnx_path)):
        b = onnx_size_breakdown(path)
        out[label] = {"encoder": b["encoder"], "total": b["file"], "embeddings": b["embeddings"], "head": b["head"]}
    if ir:
        out["deployed"] = {"total": int(dep["size_bytes"]), "runtime": "openvino", "file": dep.get("path"),
                           "source": dep.get("source")}
    extra = [s.result.get("metrics", {}).get("size") for s in manifest.steps]
    for e in extra:  # passes that know a better deployed format (e.g. sparse bitmask + int8)
        if isinstance(e, dict):
            out.update(e)
    manifest.data["size"] = out
    manifest.save()


def final_eval(state: RunState) -> dict[str, Any]:
    """``compress()``'s evaluation: the teacher, the final torch model and the deployed ONNX graph (if any) on
    ``eval_data``; ``score`` is what is deployed: the ONNX graph when an ONNX pass ran, else the torch model."""
    from compresslab.eval.evaluate import compare, onnx_forward, predict, torch_forward

    spec, kw = state.task.spec, dict(batch_size=state.settings.eval.batch_size, max_length=state.settings.max_length)
    ref = teacher_scored(state)
    batch_dep: dict[str, Any] = {}
    models = {"teacher": compare(ref, None, spec),
              "torch_final": compare(predict(torch_forward(state.model), spec, state.eval_examples, state.tokenizer,
                                             **kw), ref, spec)}
    if state.onnx is not None:
        from compresslab.eval.onnx_runner import OnnxRunner

        forward = onnx_forward(OnnxRunner(state.onnx.onnx_path, threads=state.settings.threads))
        deployed = predict(forward, spec, state.eval_examples, state.tokenizer, **kw)
        models["deployed"] = compare(deployed, ref, spec)
        found = score_batch_dependence(forward, state.onnx.onnx_path, deployed, state, "deployed")
        if found:
            batch_dep = {"deployed": found}
    final = models.get("deployed", models["torch_final"])
    _, share = _chance_facts(ref, spec)
    out = {"split": "eval_data", "n": len(state.eval_examples), "primary_metric": spec.primary_metric,
           "score": final["score"], "agreement": final.get("agreement"), "models": models,
           **({"majority_share": share} if share is not None else {}),
           "truncated": count_and_say(state.eval_examples, state.tokenizer, state.settings.max_length, "eval_data",
                                      kind=spec.kind)}
    if batch_dep:
        out["batch_dependence"] = batch_dep
    return out
