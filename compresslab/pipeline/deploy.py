"""The deploy stage: which runtime's artifact is deployed, and so scored (``conf/deploy``).

``ort``: the ONNX file the pipeline produced (fused fp32, or an ONNX pass's int8 graph).
``openvino``: an OpenVINO IR in optimum-intel's layout (``export/openvino/openvino_model.xml`` +
``.bin`` + config + tokenizer), converted from the plain export, or from the deployed graph itself
when it is a QDQ int8 graph OpenVINO reads. ORT's fused graph (``com.microsoft`` ops) is
unreadable there: the plain twin is converted. An int8 pipeline gets an int8 IR per
``deploy.int8``: ``ours`` (its own QDQ graph; when that is ORT's dynamic MatMulInteger form, our
static QDQ calibration of the plain fp32 export), ``nncf`` (NNCF PTQ on the same calibration
examples, in ``export/openvino_nncf/``: the peer's method) or ``auto`` (both, the higher
validation agreement with the teacher). A graph OpenVINO cannot convert, or an IR whose f32 parity
against torch fails (``pipeline.ir_parity``), leaves ORT the deploy target (recorded, never a crash). An n-bit
weight-only file (``MatMulNBits``) has no OpenVINO form here: its IR would be the fp32 model, its size win
lost, so ``openvino`` is refused with the config (``preflight.check_nbits_deploy``) and ``auto`` keeps ORT with
a note.
``auto``: among ORT and OpenVINO, the runtimes whose VALIDATION-split agreement with the teacher is
at least ORT's minus ``tolerance`` are eligible (ORT always is); the one with the lowest p50 at
batch 32 (seq = the task's max_length), timed interleaved here, is deployed. That timing records
the machine's load (``deploy.auto.machine_load``); when other work ran (``busy``), the choice is
kept but flagged in ``deploy.notes`` and warned about, since it rests on void timings.

Manifest: ``export.openvino`` (IR file, source, int8, method, parity vs torch with a verdict at f32 and at
the deployed precision, int8 candidates and choice, notes or error),
``export.deployed`` (path, runtime, precision, size) and ``deploy`` (requested, chosen, notes,
``auto`` figures, and ``path`` / ``folder``: the deployed file and the folder that ships, relative to the run dir,
also named by the run dir's ``DEPLOYED.txt``: :mod:`compresslab.pipeline.deployed_pointer`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compresslab.eval.scoring_settings import add_scoring_settings
from compresslab.export.openvino_int8 import IR_NAME
from compresslab.export.precision import is_int8, nbits_of, precision_class
from compresslab.failure import error_text
from compresslab.manifest import RunManifest
from compresslab.pipeline.deployed_pointer import deployed_paths, write_pointer
from compresslab.pipeline.settings import RunSettings
from compresslab.pipeline.stage_files import record_files, record_stage, recorded, stage_done
from compresslab.pipeline.state import RunState
from compresslab.pipeline.validation import ValidationAgreement

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

IR_DIR = "openvino"
NNCF_IR_DIR = "openvino_nncf"  # deploy.int8=nncf|auto: NNCF's int8 IR (the peer's method)
NBITS_NOT_ON_OPENVINO = ("OpenVINO not deployed: {file} has n-bit weights (MatMulNBits), which OpenVINO cannot read; "
                         "its IR would be the fp32 model (the dequantized weights, the size win lost), so ORT stays "
                         "the deploy target")


def deploy(state: RunState, run_dir: Path, manifest: RunManifest, threads: int) -> None:
    """Decide and record the deployed artifact (``manifest.export.deployed``) per ``deploy.runtime``."""
    d = state.settings.deploy
    onnx_path = Path(state.onnx.onnx_path)
    prec = _precision_of(onnx_path)
    record: dict[str, Any] = {"path": _rel(onnx_path, run_dir), "runtime": "ort", "precision": prec,
                              "label": f"ort_{prec}", "size_bytes": onnx_path.stat().st_size}
    if prec == "nbits":  # which widths the file stores (deployed bits: 3-bit layers are 4-bit codes)
        record["stored_bits"] = _nbits_of(onnx_path)
    section: dict[str, Any] = {"requested": d.runtime, "runtime": "ort", "notes": []}
    if d.runtime != "ort" and prec == "nbits":
        section["notes"].append(NBITS_NOT_ON_OPENVINO.format(file=_rel(onnx_path, run_dir)))
        log.warning("deploy: %s", section["notes"][-1])
    elif d.runtime != "ort":
        validation = ValidationAgreement.of_run(state)
        ir = openvino_ir(state, run_dir, manifest, threads, validation)
        section["notes"] += ir.get("notes", [])
        chosen = "ort"
        if "error" in ir:
            section["notes"].append(f"OpenVINO not deployed: {ir['error']}; ORT stays the deploy target")
            log.warning("deploy: %s", section["notes"][-1])
        elif d.runtime == "openvino":
            chosen = "openvino"
        else:
            section["auto"] = choose_auto(state, run_dir, ir, threads, validation)
            chosen = section["auto"]["chosen"]
            if section["auto"].get("busy"):
                section["notes"].append(
                    f"MACHINE BUSY while deploy=auto timed ORT against OpenVINO: "
                    f"{'; '.join(section['auto']['machine_load']['reasons'])}. {chosen} was chosen on void timings; "
                    "rerun on a quiet machine, or choose yourself with deploy.runtime=ort or deploy.runtime=openvino")
                log.warning("deploy: %s", section["notes"][-1])
        if chosen == "openvino":
            xml = run_dir / ir["path"]
            compiled = ir["compiled_precision"].get(d.precision)
            label = f"openvino_{'nncf_int8' if ir.get('int8_method') == 'nncf' else 'int8' if ir['int8'] else compiled}"
            record = {"path": ir["path"], "runtime": "openvino", "precision": d.precision,
                      "compiled_precision": compiled, "label": label, "method": ir.get("method", "compresslab"),
                      "int8": ir["int8"], "source": ir["source"], "onnx_path": _rel(onnx_path, run_dir),
                      "size_bytes": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size}
            if ir.get("precision_note"):  # a binary model: deploy.precision=default compiled as f32
                record["precision_note"] = ir["precision_note"]
            # the IR folder says how the run scores it (compresslab.evaluate reads it): at the deploy precision
            # recorded now too: the IR's files were recorded as openvino_ir wrote them, this one included
            scoring = add_scoring_settings(xml.parent, openvino_precision=d.precision)
            record_files(manifest, run_dir, "deploy", [scoring])
        section["runtime"] = chosen
    manifest.data.setdefault("export", {})["deployed"] = record
    manifest.data["deploy"] = {**section, **deployed_paths(record)}  # path/folder: what ships, from the run dir
    # DEPLOYED.txt: the same, for someone reading the folders alone; recorded as the stage's file (checked on resume)
    record_files(manifest, run_dir, "deploy", [write_pointer(run_dir, record)])
    if not stage_done(manifest, "deploy"):  # an IR's files were recorded as they were written (openvino_ir)
        record_stage(manifest, run_dir, "deploy")
    manifest.save()
    log.info("deploy: %s (%s)", record["path"], record["runtime"])


def openvino_ir(state: RunState, run_dir: Path, manifest: RunManifest, threads: int,
                validation: "ValidationAgreement | None" = None) -> dict[str, Any]:
    """Convert the deployed model to an IR under ``export/openvino/`` (once per run) and check its
    parity against torch; returns (and stores as ``export.openvino``) the record, with ``error``
    when OpenVINO cannot convert it or the IR compiled f32 fails its parity rule. An int8 pipeline
    gets an int8 IR per ``deploy.int8`` (ours / nncf / auto: see :func:`_int8_ir`). A recorded IR is reused
    only while its files' sha256 are recorded (checked at the resume's start: :mod:`compresslab.pipeline.stage_files`);
    the sha256 of every file written here are recorded with it."""
    section = manifest.data.setdefault("export", {})
    done = section.get("openvino")
    if done and ("error" in done or recorded(manifest, run_dir, run_dir / done["path"], "deploy")):
        return done
    deployed, fp32 = Path(state.onnx.onnx_path), run_dir / section["fp32"]["path"]
    if is_int8(deployed):
        rec = _int8_ir(state, run_dir, threads, deployed, fp32, validation or ValidationAgreement.of_run(state))
    else:
        src, notes = ir_source(deployed, fp32, run_dir)
        rec = _converted(state, src, run_dir / "export" / IR_DIR, run_dir, threads, notes)
        rec["method"] = "compresslab"
    section["openvino"] = rec
    record_stage(manifest, run_dir, "deploy")
    manifest.save()
    return rec


def _converted(state: RunState, src: Path, out: Path, run_dir: Path, threads: int, notes: list[str]) -> dict[str, Any]:
    """Convert ``src`` into an IR in ``out`` and check it; the record (``error`` when it fails)."""
    rec: dict[str, Any] = {"source": _rel(src, run_dir), "int8": is_int8(src), "notes": notes}
    try:
        xml = convert_to_ir(src, out)
    except ValueError as e:
        rec["error"] = error_text(e, typed=False)
    else:
        _add_ir(rec, state, xml, run_dir, threads)
    return rec


def _add_ir(rec: dict[str, Any], state: RunState, xml: Path, run_dir: Path, threads: int) -> None:
    """Record a written IR in ``rec``: its path and its parity checks (``pipeline.ir_parity``: ``error`` when
    the IR compiled f32 fails its rule, a note when it fails at the deployed precision)."""
    from compresslab.pipeline.ir_parity import check_ir

    rec["path"] = _rel(xml, run_dir)
    checked = check_ir(state, xml, threads)
    rec.setdefault("notes", []).extend(checked.pop("notes", []))
    rec.update(checked)
    if rec.get("precision_note"):
        rec["notes"].append(rec["precision_note"])


def _outlier_split(path: Path) -> bool:
    """Whether the ONNX file holds ``export/outlier_split.py``'s fp32 side paths."""
    import onnx

    from compresslab.export.outlier_split import PREFIX

    return any(n.name.startswith(PREFIX) for n in onnx.load(str(path), load_external_data=False).graph.node)


def _int8_ir(state: RunState, run_dir: Path, threads: int, deployed: Path, fp32: Path,
             validation: "ValidationAgreement") -> dict[str, Any]:
    """The int8 IR of an int8 pipeline, per ``deploy.int8``:

    ``ours``: the pipeline's own QDQ graph converted as is; when that graph is ORT-only (dynamic
    MatMulInteger), our static QDQ calibration of the final model's plain fp32 export
    (``deploy.calibration_examples`` train examples), one IR per ``deploy.smooth_alpha`` strength, the
    highest validation agreement kept -> ``export/openvino/``.
    ``nncf``: NNCF PTQ of the same plain export on the same calibration examples (accuracy control
    with ``deploy.accuracy_control``) -> ``export/openvino_nncf/``; ``method: "peer"``.
    ``auto``: both; the higher VALIDATION agreement with the teacher wins, a tie keeps ours.
    NNCF missing -> ours, with the reason in the notes."""
    from compresslab.bench.openvino_runner import plain_export, unreadable_ops
    from compresslab.export.openvino_int8 import nncf_int8_ir, nncf_missing_reason, ours_int8_ir_chosen

    d = state.settings.deploy
    want = ["ours", "nncf"] if d.int8 == "auto" else [d.int8]
    notes: list[str] = []
    if "nncf" in want and (reason := nncf_missing_reason()):
        notes.append(f"NNCF PTQ skipped: {reason}")
        want = [w for w in want if w != "nncf"] or ["ours"]
    plain = plain_export(fp32)
    # preflight refuses int8=nncf with a quantizing torch pass; auto (the default) skips NNCF here, saying why
    if "nncf" in want and (why := quantized_already(state.model, plain, run_dir)):
        notes.append(f"NNCF PTQ skipped: the model is {why}; NNCF's PTQ takes an fp32 model")
        want = [w for w in want if w != "nncf"] or ["ours"]
    feeds: list[dict] = []

    def calibration() -> list[dict]:
        if not feeds:
            ctx = state.context(run_dir, run_dir / "export")
            feeds.extend({k: v.numpy() for k, v in b.items() if k != "labels"}
                         for b in ctx.calibration_batches(d.calibration_examples,
                                                          setting="deploy.calibration_examples"))
        return feeds

    cands: dict[str, dict[str, Any]] = {}
    if "ours" in want:
        own = plain_export(deployed)
        bad = unreadable_ops(own)
        if not bad:  # the pipeline's own QDQ graph (our calibration in its int8 pass)
            cands["ours"] = _converted(state, own, run_dir / "export" / IR_DIR, run_dir, threads, [])
            cands["ours"]["quantization"] = {"method": "ours", "by": "the pipeline's int8 pass"}
            cands["ours"]["notes"].append("the pipeline's own QDQ graph, converted as it is: our OpenVINO int8 "
                                          "recipe and deploy.smooth_alpha do not apply to it")
        else:
            rec: dict[str, Any] = {"source": _rel(plain, run_dir), "int8": True, "notes": [
                f"OpenVINO cannot read the deployed {_rel(deployed, run_dir)} (ops {', '.join(bad)}): our static QDQ "
                f"calibration ({sum(len(f['input_ids']) for f in calibration())} train examples) of the final "
                f"model's plain fp32 export {_rel(plain, run_dir)} made the int8 IR, not {_rel(deployed, run_dir)}: "
                "a static int8 (activation scales calibrated once), another int8 method than that file's"
                + ("; the int8 step's outlier split (fp32 side paths) is not in it" if _outlier_split(deployed)
                   else "")]}
            try:
                keep = fp32_matmuls(state.model, d.keep_fp32, plain) if d.keep_fp32 else []
                xml, rec["quantization"] = ours_int8_ir_chosen(
                    plain, run_dir / "export" / IR_DIR, calibration(), d.smooth_alpha,
                    validation.ir_scorer(threads), exclude=keep)
                rec["quantization"]["keep_fp32"] = {"patterns": list(d.keep_fp32 or ()), "matmuls": keep}
                if note := rec["quantization"].get("attention_scores", {}).get("note"):
                    rec["notes"].append(note)  # a Q.K^T shortfall, where a reader of the notes sees it
            except ValueError as e:
                rec["error"] = error_text(e, typed=False)
            else:
                _add_ir(rec, state, xml, run_dir, threads)
            cands["ours"] = rec
        cands["ours"]["method"] = "compresslab"
    if "nncf" in want:
        rec = {"source": _rel(plain, run_dir), "int8": True, "method": "peer", "notes": []}
        val = validation.labelled_feeds() if d.accuracy_control else None
        if val is not None and d.max_drop < 1.0 / max(len(validation.examples), 1):
            notes.append(f"deploy.max_drop={d.max_drop} is below one validation example "
                         f"(1/{len(validation.examples)}): NNCF's accuracy control can only meet a zero drop")
            log.warning("deploy: %s", notes[-1])
        try:
            xml, rec["quantization"] = nncf_int8_ir(plain, run_dir / "export" / NNCF_IR_DIR, calibration(),
                                                    validation=val, max_drop=d.max_drop)
        except Exception as e:  # NNCF raises many kinds; the run goes on with ours
            rec["error"] = f"NNCF PTQ failed: {error_text(e, limit=300)}"
        else:
            _add_ir(rec, state, xml, run_dir, threads)
        cands["nncf"] = rec
    ok = [k for k in cands if "error" not in cands[k]]
    if not ok:
        return {**cands[want[0]], "notes": notes + cands[want[0]]["notes"], "candidates": cands}
    # requested: the setting as given, beside the method chosen (int8_method), so no reader takes one for the other
    chosen, choice = ok[0], {"rule": f"deploy.int8={d.int8}", "requested": d.int8, "candidates": ok,
                             "n": len(validation.examples)}  # the count a reader weighs the agreements by
    if len(ok) > 1:
        scores = validation.agreement({k: run_dir / cands[k]["path"] for k in ok}, threads)
        key = validation.key
        chosen = choose_int8(scores, key)
        choice.update(rule="the higher validation agreement with the teacher; a tie keeps ours", split="validation",
                      agreement_key=key, validation=scores)
        log.info("deploy int8: %s (validation %s %s)", chosen, key, {k: round(v[key], 4) for k, v in scores.items()})
    out = dict(cands[chosen])
    out.update(int8_method=chosen, int8_choice=choice, notes=notes + out["notes"], candidates=cands)
    return out


def quantized_already(model: "nn.Module | None", plain: Path, run_dir: Path) -> str | None:
    """What NNCF's PTQ would start from, when a torch pass quantized it already (None: an fp32 model): its Linears
    int8 QDQ (``int8_qat``: the plain export is its QDQ graph), n-bit (``hawq``'s frozen weights: a float graph
    whose weights sit on the n-bit grid) or binary (``bibert``). PTQ of such a model quantizes the rounding
    again: it is no int8 of the model. E.g. ``int8 already (24 int8 QDQ Linears; 96 Quantize/DequantizeLinear
    nodes in export/model.onnx: a torch pass quantized it)``."""
    from compresslab.export.openvino_int8 import already_quantized
    from compresslab.models.binary import binary_modules
    from compresslab.models.qdq import qdq_modules
    from compresslab.models.quantized import quantized_modules

    kinds = {} if model is None else {"int8": (qdq_modules(model), "int8 QDQ Linears"),
                                      "n-bit": (quantized_modules(model), "n-bit weight modules"),
                                      "binary": (binary_modules(model), "binary modules")}
    found = [(kind, f"{len(mods)} {what}") for kind, (mods, what) in kinds.items() if mods]
    if n := already_quantized(plain):  # the graph itself, whatever the model in memory says
        found.append(("int8", f"{n} Quantize/DequantizeLinear nodes in {_rel(plain, run_dir)}"))
    if not found:
        return None
    return f"{found[0][0]} already ({'; '.join(d for _, d in found)}: a torch pass quantized it)"


def check_deploy(settings: RunSettings, steps: Sequence[Any], model: "nn.Module") -> None:
    """Deploy settings (``settings.deploy``, ``settings.bench``) that need the loaded ``model``, checked before any
    step (:func:`~compresslab.pipeline.preflight.check_with_model`): every ``keep_fp32``
    pattern must select a Linear of the model (ValueError naming the available ones), and no
    OpenVINO precision a binary model refuses (bf16), when the model is binary or one of ``steps``
    binarizes it (a pass with ``binarizes``): otherwise the refusal would come after the training."""
    from compresslab.bench.openvino_runner import resolve_precision
    from compresslab.models.binary import is_binary
    from compresslab.types import capability

    d, b = settings.deploy, settings.bench
    binarized_by = [s.name for s in steps if capability(s.pass_, "binarizes")]
    if is_binary(model) or binarized_by:
        what = f"the model {'step ' + binarized_by[0] + ' makes' if binarized_by else 'loaded'}"
        if d.runtime != "ort":
            resolve_precision(d.precision, binary=True, setting="deploy.precision", what=what)
        if "openvino" in b.backends:
            for p in b.openvino_precisions:
                resolve_precision(p, binary=True, setting="bench.openvino_precisions", what=what)
    if d.keep_fp32 and d.runtime != "ort":
        from compresslab.targets import select_modules

        try:
            select_modules(model, list(d.keep_fp32))
        except ValueError as e:
            raise ValueError(f"deploy.keep_fp32: {e}") from None


def fp32_matmuls(model: Any, patterns: Any, onnx_path: Path) -> list[str]:
    """The MatMul node names in ``onnx_path`` of the Linear modules ``patterns`` select in ``model``
    (``targets`` vocabulary: exact, dotted suffix, glob, role such as ``ffn_out``, ``re:``): the
    exporter names a Linear ``a.layer.0.c``'s MatMul ``.../a/layer.0/c/MatMul``. ValueError when a selected
    module has no MatMul in the graph (a pattern that matches nothing raises in ``select_modules``)."""
    import onnx

    from compresslab.targets import select_modules

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if n.op_type == "MatMul"]
    out = []
    for mod in select_modules(model, list(patterns)):
        parts: list[str] = []
        for seg in mod.split("."):  # the exporter keeps ModuleList indices on their parent: layer.0
            if seg.isdigit() and parts:
                parts[-1] += f".{seg}"
            else:
                parts.append(seg)
        hit = [n for n in names if n.endswith("/" + "/".join(parts) + "/MatMul")]
        if not hit:
            raise ValueError(f"keep_fp32: module {mod} has no MatMul node in {onnx_path.name}")
        out += hit
    return out


def choose_int8(scores: dict[str, dict[str, float]], key: str) -> str:
    """The int8 method with the higher validation ``key`` (agreement with the teacher); a tie, or a
    score missing or NaN, favours ``ours``. ``scores``: method -> ``compare`` output."""
    def rank(k: str) -> tuple[float, bool]:
        v = scores[k].get(key)
        return (float(v) if v is not None and np.isfinite(v) else float("-inf"), k == "ours")

    return max(scores, key=rank)


def ir_source(deployed: Path, fp32: Path, run_dir: Path | None = None) -> tuple[Path, list[str]]:
    """The ONNX graph to convert: the deployed graph's plain twin when OpenVINO reads it (fp32 plain
    export, QDQ int8), else the final model's plain fp32 export, with a note naming both files."""
    from compresslab.bench.openvino_runner import plain_export, unreadable_ops

    src = plain_export(deployed)
    bad = unreadable_ops(src)
    if not bad:
        return src, []
    fallback = plain_export(fp32)
    name = (lambda p: _rel(p, run_dir)) if run_dir else (lambda p: str(p))
    return fallback, [f"OpenVINO cannot read the deployed {name(deployed)} (ops {', '.join(bad)}): the IR is "
                      f"converted from the final torch model's plain fp32 export {name(fallback)}"]


def convert_to_ir(onnx_path: Path, out_dir: Path) -> Path:
    """``openvino.convert_model`` + ``save_model(compress_to_fp16=False)`` into ``out_dir`` with the
    config and tokenizer files beside ``onnx_path``; ValueError naming the unconvertible ops."""
    import openvino as ov

    from compresslab.export.openvino_int8 import save_ir

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # OpenVINO raises bare RuntimeErrors (OpConversionFailure and friends)
        raise ValueError(f"OpenVINO cannot convert {onnx_path.name}: ops {_ops_in_error(str(e), onnx_path)}. "
                         f"OpenVINO said: {error_text(e, typed=False, limit=400)}") from e
    return save_ir(model, out_dir, onnx_path.parent)


def _ops_in_error(message: str, onnx_path: Path) -> list[str]:
    """The graph's op types that an OpenVINO conversion error names (else those we know it cannot read)."""
    import onnx

    from compresslab.bench.openvino_runner import unreadable_ops

    text = message.split("following", 1)[-1]  # "... does not support the following ONNX operations: ..."
    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    ops = {f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in nodes}
    named = sorted(op for op in ops if re.search(rf"(?<![\w.]){re.escape(op)}(?!\w)", text))
    return named or unreadable_ops(onnx_path) or ["(none named)"]


def choose_auto(state: RunState, run_dir: Path, ir: dict[str, Any], threads: int,
                validation: "ValidationAgreement | None" = None) -> dict[str, Any]:
    """ORT or OpenVINO by the rule in this module's docstring; returns the decision and its figures."""
    from compresslab.bench import OrtRunner, measure_latency
    from compresslab.bench.latency import shape_key
    from compresslab.bench.machine_load import timing_window
    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.eval.evaluate import onnx_forward
    from compresslab.eval.onnx_runner import OnnxRunner

    d, b = state.settings.deploy, state.settings.bench
    validation = validation or ValidationAgreement.of_run(state)
    rule = ("eligible: validation agreement >= ORT's - tolerance (ORT always); chosen: lowest p50 at "
            "b32 x s<max_length> among the eligible")
    out: dict[str, Any] = {"rule": rule, "tolerance": d.tolerance, "split": "validation", "n": len(validation.examples)}
    if not validation.examples:
        out.update(chosen="ort", reason="no validation examples: nothing to decide on")
        return out
    vocab = int(getattr(state.model.config, "vocab_size", 100))
    runners = {"ort": OrtRunner(state.onnx.onnx_path, threads, vocab_size=vocab),
               "openvino": OpenVinoRunner(run_dir / ir["path"], threads, d.precision, vocab_size=vocab)}
    scores = validation.score({"ort": onnx_forward(OnnxRunner(state.onnx.onnx_path, threads=threads)),
                               "openvino": onnx_forward(runners["openvino"])})
    key = validation.key
    shape = (32, state.settings.max_length)
    # a named window: a busy machine is warned about as deploy=auto's, and recorded beside the choice
    with timing_window("deploy=auto: ORT vs OpenVINO") as window:
        lat = measure_latency(runners, [shape], warmup=b.warmup, runs=b.runs, min_time_s=b.min_time_s, seed=b.seed,
                              vocab_size=vocab, max_runs=b.max_runs, log_as="deploy=auto")["results"]
    load = window.record()
    p50 = {k: lat[k][shape_key(*shape)]["p50_ms"] for k in runners}
    eligible = [k for k in runners if k == "ort" or scores[k][key] >= scores["ort"][key] - d.tolerance]
    chosen = min(eligible, key=lambda k: (p50[k], k != "ort"))  # a tie keeps ORT
    out.update(chosen=chosen, agreement_key=key, validation=scores, eligible=eligible,
               shape=shape_key(*shape), p50_ms=p50, threads=threads,
               precision={"ort": _precision_of(state.onnx.onnx_path),
                          "openvino": runners["openvino"].compiled_precision},
               busy=bool(load["busy"]), machine_load=load)
    log.info("deploy auto: %s (validation %s %s, b32 p50 ms %s)", chosen, key,
             {k: round(v[key], 4) for k, v in scores.items()}, {k: round(v, 2) for k, v in p50.items()})
    return out


_precision_of = precision_class  # module names of their own: tests stand in for the graph reads
_nbits_of = nbits_of

def _rel(p: Path, run_dir: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(p)
