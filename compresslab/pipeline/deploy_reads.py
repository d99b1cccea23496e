"""Which ``deploy.*`` settings a run reads: the one rule behind preflight's refusal of a deploy setting the run would
ignore (:func:`~compresslab.pipeline.preflight.check_unread_deploy_settings`) and a search's passing of a deploy
setting to the candidates that read it only (``search.plan.unread_deploy_keys``), so the two cannot disagree.

What the deploy stage (``pipeline/deploy.py``) does depends on the file the steps leave and on the torch model:

* an n-bit file (``writes_nbits``: MatMulNBits) has no OpenVINO form: ORT stays the deploy target and no IR is made
  (``runtime=openvino`` is refused outright by ``preflight.check_nbits_deploy``);
* an fp32 file becomes an fp32 IR: no int8 setting is read;
* ORT's dynamic int8 (MatMulInteger, which OpenVINO cannot read) is re-quantized: our recipe calibrates the plain
  fp32 export (``calibration_examples``, ``keep_fp32``, ``smooth_alpha``), NNCF's PTQ too (``calibration_examples``,
  ``accuracy_control``, ``max_drop``) as ``int8`` says;
* a QDQ int8 graph (ORT static int8, int8 QAT) is converted as it is: our recipe does not run, NNCF's may;
* NNCF's PTQ takes an fp32 model: after a torch pass that quantized the model itself (int8 QAT, hawq's n-bit
  weights, bibert's binary ones) it has none and does not run.

Settings that hold whatever the steps are (``tolerance`` outside ``runtime=auto``, anything but ``runtime`` on ORT,
``accuracy_control`` with ``int8=ours``) are refused by ``DeploySettings`` itself, and named here too so the rule is
whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from compresslab.types import capability

if TYPE_CHECKING:
    from compresslab.pipeline.settings import DeploySettings

# the int8 passes by the file they write: ORT's dynamic MatMulInteger form (OpenVINO cannot read it) or a QDQ graph
# (OpenVINO reads it as it is); int8_qat makes the torch model itself int8
DYNAMIC_INT8_PASSES = frozenset({"ort_int8_dynamic"})
QDQ_INT8_PASSES = frozenset({"ort_int8_static", "int8_qat"})
TORCH_INT8_PASSES = frozenset({"int8_qat"})

# each deploy setting by what reads it: "ir" (an OpenVINO IR is made), "choice" (runtime=auto chooses), "int8" (how
# an int8 IR is made), "ours" (our recipe calibrating the plain export), "nncf" (NNCF's PTQ), "accuracy" (NNCF's
# accuracy control)
READERS: dict[str, tuple[str, ...]] = {
    "runtime": (), "precision": ("ir",), "tolerance": ("choice",), "int8": ("int8",),
    "calibration_examples": ("ours", "nncf"), "keep_fp32": ("ours",), "smooth_alpha": ("ours",),
    "accuracy_control": ("nncf",), "max_drop": ("accuracy",),
}


def quantizes_torch_model(pass_: Any) -> bool:
    """Whether a pass (instance or class) leaves the torch model itself quantized: int8 QDQ Linears (``int8_qat``),
    frozen n-bit weights (``quantizes_weights``: hawq) or binary ones (``binarizes``: bibert)."""
    return (pass_.name in TORCH_INT8_PASSES or bool(capability(pass_, "quantizes_weights"))
            or bool(capability(pass_, "binarizes")))


@dataclass(frozen=True)
class DeployedFile:
    """What the deploy stage gets from a pipeline's steps: ``nbits``, the step writing n-bit weights, and ``int8``,
    the step writing an int8 file (``dynamic``: ORT's MatMulInteger form), each ``<pass> (step <name>)`` or None;
    ``quantizer``, ``(pass, step)`` of the first step leaving the torch model itself quantized, or None."""

    nbits: str | None = None
    int8: str | None = None
    dynamic: bool = False
    quantizer: tuple[str, str] | None = None

    @classmethod
    def of(cls, steps: Iterable[tuple[str, Any]]) -> "DeployedFile":
        """From ``(step name, pass instance or class)`` pairs in step order: a run's steps, or a shipped pipeline's
        passes read from its YAML (``search.plan``)."""
        nbits = int8 = None
        quantizer: tuple[str, str] | None = None
        dynamic = False
        for step, p in steps:
            named = f"{p.name} (step {step})"
            if nbits is None and capability(p, "writes_nbits"):
                nbits = named
            if p.name in DYNAMIC_INT8_PASSES | QDQ_INT8_PASSES:
                int8, dynamic = named, p.name in DYNAMIC_INT8_PASSES  # the last int8 step writes the file
            if quantizer is None and quantizes_torch_model(p):
                quantizer = (p.name, step)
        return cls(nbits, int8, dynamic, quantizer)


def _not_running(f: DeployedFile, d: "DeploySettings") -> dict[str, str]:
    """Reader (:data:`READERS`) -> why it does not run in this run; a reader that runs is absent."""
    why: dict[str, str] = {}
    if d.runtime == "ort":
        why["ir"] = "deploy.runtime=ort deploys the ONNX file: no OpenVINO IR is made"
    elif f.nbits is not None:
        why["ir"] = (f"{f.nbits} writes n-bit weights (MatMulNBits), which OpenVINO cannot read: "
                     f"deploy.runtime={d.runtime} keeps ORT and makes no IR")
    if "ir" in why or d.runtime != "auto":
        why["choice"] = why.get("ir") or f"only deploy.runtime=auto chooses a runtime (deploy.runtime={d.runtime})"
    if "ir" in why or f.int8 is None:
        why["int8"] = why.get("ir") or "no step of this pipeline makes int8, so its IR is the fp32 model converted"
        why["ours"] = why["nncf"] = why["int8"]
    else:
        if not f.dynamic:
            why["ours"] = (f"{f.int8} writes a QDQ graph, which OpenVINO reads as it is: our int8 recipe (keep_fp32, "
                           "smooth_alpha) does not run")
        elif d.int8 == "nncf":
            why["ours"] = "deploy.int8=nncf: our int8 recipe does not run"
        if f.quantizer is not None:
            why["nncf"] = (f"{f.quantizer[0]} quantizes the torch model itself (step {f.quantizer[1]}): there is no "
                           "fp32 model for NNCF's PTQ (int8=nncf, accuracy_control, max_drop, calibration_examples)")
        elif d.int8 == "ours":
            why["nncf"] = "deploy.int8=ours: NNCF's PTQ does not run"
    why["accuracy"] = why.get("nncf") or ("" if d.accuracy_control else
                                          "deploy.accuracy_control=false: NNCF's accuracy control does not run")
    if not why["accuracy"]:
        del why["accuracy"]
    return why


def unread_deploy_settings(f: DeployedFile, d: "DeploySettings") -> dict[str, str]:
    """``{key: why}`` for each ``deploy.<key>`` a run whose steps leave ``f``, deployed per ``d``, never reads: every
    reader of it (:data:`READERS`) does not run. ``int8=nncf`` is unread where NNCF's PTQ cannot run; ``int8=ours``
    (or ``auto``) is read wherever an int8 IR is made (it says our IR is the one)."""
    why = _not_running(f, d)
    out: dict[str, str] = {}
    for key, readers in READERS.items():
        if key == "int8" and "int8" not in why and d.int8 == "nncf" and "nncf" in why:
            out[key] = why["nncf"]
        elif readers and all(r in why for r in readers):
            out[key] = "; and ".join(dict.fromkeys(why[r] for r in readers))
    return out


__all__ = ["DYNAMIC_INT8_PASSES", "DeployedFile", "QDQ_INT8_PASSES", "READERS", "TORCH_INT8_PASSES",
           "quantizes_torch_model", "unread_deploy_settings"]
