"""Helpers of the resume tests (test_resume_step_files.py, test_resume_stage_files.py): a finished tiny run copied
as one that stopped, a file broken in three ways, and the comparison of a resumed run with the uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from compresslab.manifest import read_json, sha256_file

AFTER_EVAL = ("eval", "size", "bench", "disk", "finished")  # what a run killed during eval has not recorded yet
# the stages whose files a run killed during eval had written (and recorded the sha256 of)
BEFORE_EVAL = ("export", "deploy")


def stopped_copy(ref: Path, dst: Path, steps: int) -> Path:
    """``ref`` as a run that stopped after its first ``steps`` steps: with all of them done, as killed during eval
    (export and deploy recorded); with fewer, as stopped before the export (``run.stop_after``)."""
    shutil.copytree(ref, dst)
    m = read_json(dst / "manifest.json")
    every = steps == len(m["steps"])
    for s in m["steps"][steps:]:
        shutil.rmtree(dst / s["dir"])
    m["steps"] = m["steps"][:steps]
    dropped = AFTER_EVAL if every else (*AFTER_EVAL, "export", "deploy")
    for key in dropped:
        m.pop(key, None)
    # the sha256 of the files of the stages it had not run (eval's, the bench's, the report's) were never recorded
    m["stage_files"] = {k: v for k, v in m.get("stage_files", {}).items() if every and k in BEFORE_EVAL}
    for name in ("eval", "bench", "plots") if every else ("eval", "bench", "plots", "export"):
        shutil.rmtree(dst / name, ignore_errors=True)
    m["status"] = "interrupted" if every else "stopped"
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))
    return dst


def change(path: Path) -> None:
    """Other bytes in a file that still reads as what it was (the trial negated a weight): no reader can tell."""
    if path.suffix == ".onnx":
        import onnx

        g = onnx.load(str(path))
        g.doc_string = "edited after it was written"
        onnx.save(g, str(path))
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        t = load_file(path)
        key = next(k for k in sorted(t) if k.endswith("classifier.weight"))
        t[key] = -t[key]
        save_file(t, path)
    else:  # an IR's weights (.bin), JSON: the same size, one byte other
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# how a file is broken -> (the breaker, what the warning says of it: a step's file, a stage's file)
BREAK = {
    "changed": (change, "changed after the"),
    "truncated": (truncate, "changed after the"),
    "deleted": (lambda p: p.unlink(), "is missing"),
}


# OpenVINO names the nodes it makes (Constant_4112) by a counter of the process: an IR converted again in the
# process that made the reference differs from it there alone (a fresh process converts to the same bytes)
_OV_NODE_NAME = re.compile(r'_\d+"')


def _digest(p: Path) -> str:
    if p.suffix == ".xml":
        return hashlib.sha256(_OV_NODE_NAME.sub('_N"', p.read_text()).encode()).hexdigest()
    return sha256_file(p)


def _ir_bytes_aside(record: dict) -> dict:
    """``record`` (``export.deployed``, the ``size`` section) without an IR's bytes on disk, which its .xml's node
    numbers change (see files(); the .bin is compared byte for byte)."""
    out = json.loads(json.dumps(record))
    for rec in (out, out.get("deployed") or {}):
        if rec.get("runtime") == "openvino":
            rec.pop("size_bytes", None)
            rec.pop("total", None)
    return out


def files(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d`` (relative path -> hash; an IR's .xml with OpenVINO's node numbers left
    out), hidden files aside."""
    return {str(p.relative_to(d)): _digest(p) for p in sorted(d.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)}


# the stages whose files are the same bytes in every run of a config (the bench's timings and the report's dates
# are not)
SAME_BYTES = ("export", "deploy", "eval")


def assert_same_as(ref: Path, d: Path) -> None:
    """Every step, export and eval file, the step records, the stages' recorded sha256 and the eval and deploy
    figures of ``d`` are the reference's."""
    a, b = read_json(ref / "manifest.json"), read_json(d / "manifest.json")
    assert b["status"] == "finished"
    assert files(d / "steps") == files(ref / "steps")
    assert files(d / "export") == files(ref / "export")
    assert files(d / "eval") == files(ref / "eval")
    for sa, sb in zip(a["steps"], b["steps"], strict=True):
        assert (sb["name"], sb["status"], sb["artifacts"], sb["metrics_after"]) == \
               (sa["name"], "done", sa["artifacts"], sa["metrics_after"])
    assert b["eval"]["models"] == a["eval"]["models"] and b["deploy"] == a["deploy"]
    assert _ir_bytes_aside(b["export"]["deployed"]) == _ir_bytes_aside(a["export"]["deployed"])
    assert _ir_bytes_aside(b["size"]) == _ir_bytes_aside(a["size"])
    same = lambda m: {k: {f: h for f, h in v.items() if not f.endswith(".xml")}  # noqa: E731 - see files()
                      for k, v in m["stage_files"].items() if k in SAME_BYTES}
    assert same(b) == same(a)
    assert set(b["stage_files"]) == set(a["stage_files"])
