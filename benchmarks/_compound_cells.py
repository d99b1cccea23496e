"""benchmarks/compound.py's cells (issue 13): which files each listed run contributes (ORT, the OpenVINO IRs
deploy made, DeepSparse), the dense baselines, and the checks a runs file must pass before any scoring or timing.
Plain dicts in, plain dicts out: ``measure`` scores and times them, ``_compound_derive`` picks from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compresslab.failure import error_text
from compresslab.manifest import read_json

from backends import _cell, _fp32_cells, _int8_ir_cells, _teacher_ckpt, teacher_ort_int8  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[1]
SPARSE_RATES = (0.5, 0.8)  # CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE tried on every OpenVINO int8 IR (AMX only)


def check_runs(runs: dict[str, Any], runs_file: str | Path) -> dict[str, dict[str, Any]]:
    """Every listed run, before any scoring or timing: its manifest is readable, it finished, and it has the
    finetune step the teacher comes from. Returns run -> manifest; SystemExit naming every bad entry and the
    runs file otherwise (a measure that failed after its timing phase lost 10 minutes of a quiet machine)."""
    if not isinstance(runs, dict) or not runs:
        raise SystemExit(f"{runs_file} lists no runs (a JSON object of name -> {{\"run_dir\": ...}}): run "
                         "`python benchmarks/compound.py pipelines` first")
    bad: list[str] = []
    manifests: dict[str, dict[str, Any]] = {}
    for p, r in runs.items():
        if not isinstance(r, dict) or not isinstance(r.get("run_dir"), str) or not r["run_dir"]:
            bad.append(f"{p}: {r!r} is not {{\"run_dir\": \"outputs/<pipeline>/<hash>\", ...}}")
            continue
        where = REPO / r["run_dir"]
        try:
            m = read_json(where / "manifest.json")
        except (OSError, ValueError) as e:
            bad.append(f"{p}: no readable manifest in {where} ({error_text(e)})")
            continue
        if m.get("status") != "finished":
            bad.append(f"{p}: run {where} is {m.get('status')!r}, not finished (resume it with the same pipelines command)")
        elif not any(s.get("name") == "finetune" for s in m.get("steps", [])):
            bad.append(f"{p}: run {where} has no finetune step: its teacher cannot be told")
        manifests[p] = m
    if bad:
        raise SystemExit(f"{runs_file}: cannot measure these runs:\n  " + "\n  ".join(bad))
    return manifests


def _deployed_onnx(rd: Path, m: dict) -> Path:
    """The ONNX file the pipeline deploys on ORT: an ONNX pass's int8 graph, else the export (QAT: the QDQ graph)."""
    last = m["steps"][-1]["result"].get("onnx_path")
    return rd / (last or m["export"]["fp32"]["path"])


def _unfused(p: Path) -> Path:
    u = p.with_name("model_unfused.onnx")
    return u if u.is_file() else p


def model_cells(rd: Path, m: dict, flags: set[str]) -> dict[str, dict[str, Any]]:
    """One compound model's cells: ORT on the deployed file, the OpenVINO int8 IRs deploy made (ours, NNCF's),
    each again with sparse weight decompression on AMX, and DeepSparse on the sparse file. A cell whose file is
    not the pipeline's final model (DeepSparse's fp32 export of a dynamic-int8 pipeline) says so:
    ``final_model`` False, and it never stands for the pipeline (``_compound_derive``)."""
    onnx_step = bool(m["steps"][-1]["result"].get("onnx_path"))  # an ONNX pass (int8) came after the export
    out = _int8_ir_cells(rd, m) if onnx_step else {}
    qat = bool(m["export"]["fp32"].get("qdq"))
    if qat:  # the QAT export IS the int8 file (QDQ): ORT runs it as is; deploy converted the same graph for OpenVINO
        out = {"ort_int8": _cell("ort", _deployed_onnx(rd, m), "int8")}
        cands = m["export"].get("openvino", {}).get("candidates", {})
        for key, name, method in (("ours", "openvino_int8", "compresslab"), ("nncf", "openvino_nncf_int8", "peer")):
            if "path" in cands.get(key, {}):
                out[name] = _cell("openvino", rd / cands[key]["path"], "default", method)
            elif key in cands:
                out[name] = _cell("openvino", None, "default", method, error=cands[key].get("error", "no IR written"))
    if "amx_int8" in flags:  # OpenVINO's sparse weight decompression acts on int8 FC layers, AMX only
        for name, c in list(out.items()):
            if c["kind"] == "openvino" and c["path"] is not None:
                for r in SPARSE_RATES:
                    out[f"{name}_sparse{round(r * 100)}"] = {**c, "sparse_rate": r}
    # DeepSparse: the QAT export (its sparse-int8 format) as is; otherwise the plain fp32 export (its sparse
    # fp32 kernels): ORT's dynamic int8 graph has contrib ops DeepSparse does not know. That fp32 file is the
    # model before the pipeline's int8 step: listed, never the pipeline's entry
    ds = _deployed_onnx(rd, m) if qat else _unfused(rd / m["export"]["fp32"]["path"])
    out["deepsparse_int8" if qat else "deepsparse_fp32"] = _cell(
        "deepsparse", ds, "int8" if qat else "fp32", **({"final_model": False} if onnx_step and not qat else {}))
    if qat:  # DeepSparse runs that QDQ file in float: the same codes in the integer form it runs with int8 kernels
        out["deepsparse_int8_matmulinteger"] = matmulinteger_cell(ds, rd)
    return out


def matmulinteger_cell(qdq: Path, rd: Path) -> dict[str, Any]:
    """The QAT export ``qdq`` in SparseML's MatMulInteger form (``compresslab.export.matmul_integer``): the same
    int8 codes, exact up to float rounding, so it is the pipeline's final model too. Written where the run's own
    bench stage writes it (``bench.deepsparse.int8_formats=[matmulinteger]``) and taken from there when that
    stage made it (its sha256 is in the run's manifest; one made here is not, and a later bench stage of the run
    rewrites it). A graph that cannot be converted is an error cell with the reason."""
    from compresslab.export.matmul_integer import qdq_to_matmul_integer

    dst = rd / "export" / "deepsparse" / "model_int8_matmulinteger.onnx"
    try:
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            qdq_to_matmul_integer(qdq, dst)  # atomic: a crash leaves no half file to be taken later
        return _cell("deepsparse", dst, "int8")
    except (OSError, ValueError) as e:
        return _cell("deepsparse", None, "int8", error=f"no MatMulInteger form of {qdq}: {error_text(e)}")


def teacher_key(m: dict[str, Any]) -> str | None:
    """The teacher a run started from: its first (finetune) step's cache key, None when the manifest has none."""
    steps = m.get("steps") or [{}]
    return ((steps[0].get("result") or {}).get("metrics") or {}).get("cache_key")


def one_teacher(keys: dict[str, str | None]) -> None:
    """Every run must start from the same teacher (its finetune cache key), or agreement and best_dense mix
    models: ValueError naming the runs and keys, and when a run's teacher cannot be told (no key)."""
    unknown = [p for p, k in keys.items() if not k]
    if unknown and len(keys) > 1:
        raise ValueError(f"cannot tell which teacher runs {unknown} started from (no finetune cache key in their "
                         "manifests): measure only runs whose teacher is recorded")
    if len(set(keys.values())) > 1:
        raise ValueError(f"the runs start from different teachers (finetune cache keys {keys}): measure runs of "
                         "one teacher together")


def dense_from_int8(cells: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Move NNCF's int8 IRs of the ``int8`` run (whose final model is the teacher; the sparse-decompression
    twins on AMX too) into ``dense`` (in place). ``dense.ort_int8`` is not taken from that run: its ORT file
    carries our rewrites (block-wise word embeddings), so build_cells quantizes the teacher in one call of ORT's
    quantizer instead (backends.teacher_ort_int8). Without NNCF's IR of the teacher (the ``int8`` run not
    listed, or NNCF missing or failed there), ``dense.openvino_nncf_int8`` says why as an error cell: best_dense
    then falls back to the fastest other cell, and the file shows that it did (``best_dense.missing``)."""
    if "int8" not in cells:
        cells["dense"]["openvino_nncf_int8"] = _cell(
            "openvino", None, "default", "peer",
            error="the int8 run is not listed in the runs file: NNCF's int8 IR of the teacher was not measured "
                  "(run `compound.py pipelines --only int8` with the same runs file)")
        return
    moved = [n for n in cells["int8"] if n.startswith("openvino_nncf_int8")]
    for n in moved:
        cells["dense"][n] = cells["int8"].pop(n)
    if not moved:
        why = "; ".join(f"{n}: {c['error']}" for n, c in cells["int8"].items() if "error" in c)
        cells["dense"]["openvino_nncf_int8"] = _cell("openvino", None, "default", "peer",
                                                     error=f"the int8 run has no NNCF IR of the teacher{': ' + why if why else ''}")


def build_cells(runs: dict[str, Any], manifests: dict[str, dict[str, Any]],
                flags: set[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> cell -> what to run: ``dense`` from the first run's teacher (and NNCF's int8 IR of it from the
    ``int8`` run), then every pipeline's model. ``manifests`` from :func:`check_runs`. ValueError when the runs
    have different teachers."""
    from compresslab.manifest import RunManifest
    from compresslab.pipeline import teacher_onnx

    one_teacher({p: teacher_key(m) for p, m in manifests.items()})
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    first = next(iter(runs))
    rd = REPO / runs[first]["run_dir"]
    fused = teacher_onnx(rd, RunManifest.load(rd))
    cells["dense"] = _fp32_cells(fused, _teacher_ckpt(rd, manifests[first]), flags)
    cells["dense"]["deepsparse_fp32"] = _cell("deepsparse", _unfused(fused), "fp32")
    # ORT's dynamic int8 of the teacher, one quantizer call: a dense peer cell (best_dense on AVX2 without VNNI)
    cells["dense"]["ort_int8"] = teacher_ort_int8(rd)
    for p, r in runs.items():
        try:
            cells[p] = model_cells(REPO / r["run_dir"], manifests[p], flags)
        except (OSError, ValueError, KeyError, StopIteration) as e:  # recorded, not dropped: an odd manifest
            cells[p] = {"error": _cell("none", None, "-", error=error_text(e))}
    dense_from_int8(cells)
    return cells


def size_bytes(path: Path | None) -> int | None:
    """Deployed bytes on disk: the file plus its external data (ONNX) or weights (an OpenVINO IR's .bin)."""
    if path is None or not Path(path).is_file():
        return None
    p = Path(path)
    extra = [p.with_suffix(".bin")] if p.suffix == ".xml" else [p.with_name(p.name + "_data"), p.with_suffix(".onnx_data"),
                                                              p.with_name(p.name + ".data")]
    return p.stat().st_size + sum(e.stat().st_size for e in set(extra) if e.is_file() and e != p)
