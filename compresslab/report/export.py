"""The report's Export and parity section, and the deploy choice in words.

What each exported file IS (its precision: ``export.fp32`` is the final model's export whatever its precision,
an int8 QDQ graph after int8 QAT), ONNX Runtime's and OpenVINO's parity with torch with their verdicts, and
what ``deploy.runtime`` / ``deploy.int8`` were set to beside what an ``auto`` chose and why. Reads the
manifest only; older manifests (no ``format``, no IR verdict) are read from the fields they have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import DASH, mb, ms, pct, plain
from compresslab.report.render import Block, Heading, Para, Table

# export.onnx.graph_format's words for an int8 QAT model's graph (not imported: that module imports torch)
QAT_FORMAT = "int8 QDQ (QAT)"
PLAIN_RULE = "every example within atol (export.atol)"  # a parity record without a rule: export.parity's plain one


def artifact_precision(rec: Mapping[str, Any]) -> str:
    """What an ``export.*`` record's file computes in: its ``format`` (export records), the compiled precision
    of a deployed IR (``int8+bf16``), ``int8 IR`` / ``fp32 IR`` for ``export.openvino``, the deployed ONNX
    file's class (``int4`` for stored 4-bit codes). Older export records have no ``format``: their ``qdq``
    and ``binary`` flags say it (else the graph is fp32)."""
    if rec.get("format"):
        return str(rec["format"])
    if rec.get("qdq"):
        return QAT_FORMAT
    if rec.get("binary") is True:
        return "fp32 (binary: ±1 values)"
    compiled, int8 = rec.get("compiled_precision"), bool(rec.get("int8"))
    if isinstance(compiled, str):  # export.deployed of an IR: as compiled
        return f"int8+{compiled}" if int8 else compiled
    if isinstance(compiled, Mapping):  # export.openvino
        return "int8 IR" if int8 else "fp32 IR"
    if rec.get("precision") == "nbits" and isinstance(rec.get("stored_bits"), list):
        return "+".join(f"int{b}" for b in rec["stored_bits"])
    if rec.get("precision"):
        return str(rec["precision"])
    return "fp32" if "exporter" in rec else DASH


def _share(scores: Mapping[str, Any], key: str, n: Any = None) -> str:
    """``validation agreement on 32 examples (one is 3.12 pt): ort 96.88% (31 of 32), openvino 100.00% (32 of
    32)``: each candidate's validation figure, as a count too when ``n`` (the validation examples) is known, since a
    choice on a few examples can turn on one of them."""
    n = F.num(n)
    if not n:
        return f"validation {key}: " + ", ".join(f"{k} {pct(F.num(F.get(v, key)))}%" for k, v in scores.items())

    def one(v: Any) -> str:
        x = F.num(F.get(v, key))
        return f"{pct(x)}%" + (f" ({round(x * n)} of {n:.0f})" if x is not None else "")

    return (f"validation {key} on {n:.0f} examples (one is {100 / n:.2f} pt): "
            + ", ".join(f"{k} {one(v)}" for k, v in scores.items()))


def _validation_n(m: Mapping[str, Any], rec: Mapping[str, Any]) -> Any:
    """How many validation examples a deploy choice (``rec``) was scored on: its own ``n``, else deploy=auto's (the
    int8 choice scores the same validation examples); None in older manifests that recorded neither."""
    return rec.get("n") if rec.get("n") is not None else F.get(m, "deploy", "auto", "n")


def runtime_choice(m: Mapping[str, Any], detail: bool = True) -> str | None:
    """``deploy.runtime`` as the user set it and, when the runtime deployed differs (``auto``, or a fallback),
    what was deployed and why: ``deploy.runtime=auto: chose openvino (...)``. None without a deploy record.
    ``detail``: the validation and latency figures ``auto`` decided on."""
    dep = F.as_dict(m.get("deploy"))
    requested, runtime = dep.get("requested"), dep.get("runtime")
    if not requested:
        return None
    text = f"deploy.runtime={requested}"
    auto = F.as_dict(dep.get("auto"))
    if requested == "auto" and auto.get("chosen"):
        text += f": chose {auto['chosen']}"
        if detail and auto.get("reason"):
            text += f" ({auto['reason']})"
        elif detail:
            key = str(auto.get("agreement_key") or "agreement")
            p50 = ", ".join(f"{k} {ms(F.num(v))} ms" for k, v in F.as_dict(auto.get("p50_ms")).items())
            tol = F.num(auto.get("tolerance"))
            within = f" (within {tol * 100:.2f} pt of ORT's)" if tol is not None else ""
            text += (f" ({_share(F.as_dict(auto.get('validation')), key, auto.get('n'))}; eligible{within}: "
                     f"{', '.join(map(str, auto.get('eligible') or [])) or DASH}; the faster at "
                     f"{plain(auto.get('shape'))}: {p50}"
                     + ("; timed on a BUSY machine" if auto.get("busy") else "") + ")")
    elif runtime and runtime != requested:
        text += f": {runtime} deployed" + (" (the deploy notes say why)" if detail else "")
    return text


def int8_choice(m: Mapping[str, Any]) -> str | None:
    """``deploy.int8`` as set and the int8 IR it chose (``deploy.int8=auto: chose ours (...)``); None when the
    run made no int8 IR by that setting."""
    ir = F.as_dict(F.get(m, "export", "openvino"))
    choice, method = F.as_dict(ir.get("int8_choice")), ir.get("int8_method")
    if not choice or not method:
        return None
    rule = str(choice.get("rule") or "")
    requested = (choice.get("requested") or F.get(m, "config", "deploy", "int8")
                 or (rule.split("=", 1)[1] if rule.startswith("deploy.int8=") else None))
    text = f"deploy.int8={plain(requested)}"
    if requested == method:
        return text
    scores = F.as_dict(choice.get("validation"))
    if scores:
        key = str(choice.get("agreement_key") or "agreement")
        return (text + f": chose {method} ({_share(scores, key, _validation_n(m, choice))}; the higher wins, a tie "
                       "keeps ours)")
    return text + f": {method}, the only candidate made (the deploy notes say why)"


def deploy_choice(m: Mapping[str, Any]) -> str | None:
    """Every deploy setting a run echoes, as set and as chosen (:func:`runtime_choice`, :func:`int8_choice`)."""
    parts = [p for p in (runtime_choice(m), int8_choice(m)) if p]
    return "; ".join(parts) if parts else None


def final_format(m: Mapping[str, Any]) -> str:
    """The final model's export (``export.fp32``) in words: ``fp32``, ``int8 QDQ (QAT)``, ..."""
    return artifact_precision(F.as_dict(F.get(m, "export", "fp32")))


def informative(rec: Mapping[str, Any]) -> bool:
    """Whether a parity record is measured only, judged by no tolerance (``status: "informative"``: ``export.parity.
    measure_parity``, e.g. ORT's int8 kernels, ``parity.int8_kernels``); an older manifest's ``int8_kernels`` said
    ``passed`` at an ``atol`` of null (an infinite tolerance), which was no verdict either."""
    return rec.get("status") == "informative" or ("passed" in rec and rec.get("atol") is None)


def _measured(rec: Mapping[str, Any]) -> str:
    """An informative record in words: what it measured, no verdict."""
    return (f"informative (measured, no tolerance): max |diff| {plain(F.num(rec.get('max_abs_diff')))}, argmax "
            f"agreement {plain(F.num(rec.get('argmax_agreement')))} over {plain(rec.get('n_examples'))} examples"
            + (f"; CPU int8 dot product: {plain(rec['cpu_int8_dot_product'])}"
               if "cpu_int8_dot_product" in rec else ""))


def _onnx_parity(m: Mapping[str, Any]) -> list[Block]:
    parity = F.as_dict(F.get(m, "export", "fp32", "parity"))
    if not parity:
        return [Para("No parity record for the final model's export (export.fp32).")]
    diff, atol = F.num(parity.get("max_abs_diff")), F.num(parity.get("atol"))
    if isinstance(parity.get("passed"), bool):  # the verdict of whatever rule judged it (older manifests: none)
        verdict = "ok" if parity["passed"] else "FAILED"
    else:
        verdict = DASH if diff is None or atol is None else "ok" if diff <= atol else "FAILED"
    rows = [[k, _measured(v) if isinstance(v, Mapping) and informative(v) else plain(v)] for k, v in parity.items()]
    return [Table(["check", "value"], [["verdict", verdict]] + rows,
                  f"ONNX Runtime vs PyTorch outputs on the final model's export (export.fp32: {final_format(m)}).")]


def _ir_verdict(rec: Mapping[str, Any], int8: bool) -> str:
    """ok / FAILED / not judged (a post-training int8 IR) / not recorded (older manifests' int8 IRs)."""
    if isinstance(rec.get("passed"), bool):
        return "ok" if rec["passed"] else "FAILED"
    if rec.get("rule"):
        return "not judged (quantization error)"
    diff, atol = F.num(rec.get("max_abs_diff")), F.num(rec.get("atol"))
    if int8 or diff is None or atol is None:  # an older manifest judged int8 IRs by nothing
        return "not recorded"
    return "ok" if diff <= atol else "FAILED"  # older fp32 IRs: the plain rule, an error when past it


def _ir_parity(m: Mapping[str, Any]) -> list[Block]:
    """One row per OpenVINO IR the deploy stage checked and per compiled precision, with its verdict."""
    ov = F.as_dict(F.get(m, "export", "openvino"))
    if not ov:
        return []
    chosen = ov.get("int8_method")
    irs = {f"{chosen} (chosen int8 IR)" if chosen else "openvino": ov}
    irs.update({f"{k} (int8 IR not chosen)": F.as_dict(v) for k, v in F.as_dict(ov.get("candidates")).items()
                if k != chosen})
    rows, rules, failed, unmade = [], [], [], []
    for name, rec in irs.items():
        for key in ("parity", "parity_deployed"):
            par = F.as_dict(rec.get(key))
            if not par:
                continue
            verdict = _ir_verdict(par, bool(rec.get("int8")))
            rows.append([name, plain(par.get("precision")), plain(par.get("max_abs_diff")), plain(par.get("atol")),
                         plain(par.get("examples_over_atol")), plain(par.get("argmax_agreement")), verdict])
            said = [str(par[k]) for k in ("rule", "tolerance_rule") if par.get(k)] or [PLAIN_RULE]
            rules += [r for r in said if r not in rules]
            if verdict == "FAILED":
                failed.append(f"{name} compiled {plain(par.get('precision'))}: max |diff| "
                              f"{plain(par.get('max_abs_diff'))} against atol {plain(par.get('atol'))}")
        if rec.get("error") and not any(f.startswith(name) for f in failed):  # made no IR, or its f32 check failed
            (failed if F.get(rec, "parity", "passed") is False else unmade).append(f"{name}: {rec['error']}")
    out: list[Block] = []
    if rows:
        out.append(Table(["OpenVINO IR", "compiled", "max |diff|", "atol", "examples past atol", "argmax agreement",
                          "verdict"], rows,
                         "OpenVINO IR vs PyTorch outputs on the same parity batches, per compiled precision: f32 "
                         "is the graph's own fidelity; the deployed precision (deploy.precision; OpenVINO's default "
                         "is bf16 on AVX512_BF16/AMX CPUs) is judged at a tolerance that fits it." +
                         (" Rules: " + " | ".join(rules) if rules else "")))
    if failed:
        out.append(Para("OpenVINO IR parity FAILED: " + "; ".join(failed) + ".", kind="warn"))
    if unmade:
        out.append(Para("No IR made: " + "; ".join(unmade) + "."))
    return out


def export_section(m: Mapping[str, Any]) -> list[Block]:
    """Export and parity: the files (each with what it computes in), ONNX parity, OpenVINO IR parity."""
    out: list[Block] = [Heading("Export and parity")]
    exp = F.as_dict(m.get("export"))
    if not exp:
        return out + [Para("Not available: the manifest has no `export` section.")]
    rows = []
    for name, v in ((n, F.as_dict(x)) for n, x in exp.items()):
        label = str(v.get("label") or name)
        shown = F.deployed_label(m) if name == "deployed" else name if label == name else f"{name} ({label})"
        rows.append([shown, plain(F.run_relative(v.get("path"), m)),
                     artifact_precision(v), mb(F.num(v.get("size_bytes"))), plain(v.get("exporter")),
                     plain(v.get("fused_attention_nodes"))])
    out.append(Table(["artifact", "path", "precision", "size (MB)", "exporter", "fused attention nodes"], rows))
    fmt = final_format(m)
    if "fp32" in exp and not fmt.startswith("fp32"):
        out.append(Para(f"export.fp32 is the final model's export, here {fmt}, not an fp32 graph: the key's name "
                        "predates int8 QAT and is kept for readers of existing manifests."))
    return out + _onnx_parity(m) + _ir_parity(m)
