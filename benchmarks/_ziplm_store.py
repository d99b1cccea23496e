"""Result store of benchmarks/ziplm.py: the resumable JSON and the provenance tags of its model dirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compresslab.manifest import read_json, sha256_file

from _results import ResultsFile, write_aside  # sibling module (script dir)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ziplm.json"
_RESULTS = ResultsFile(RESULTS)  # every write stamps meta.machine_load
PROV = "bench_source.json"  # provenance tag written into every model / export dir we make


def _load() -> dict:
    return _RESULTS.load()


def _put(*path_and_value: Any) -> None:
    """``_put("a", "b", v)`` sets ``data["a"]["b"] = v`` and writes the file atomically."""
    *path, value = path_and_value
    _RESULTS.put(path, value)


def _write_all(data: dict) -> None:
    """Rewrite the whole file (the issue's keys first), stamped like every write."""
    _RESULTS.write(data)


def _note_run(name: str, manifest: dict) -> None:
    """The machine's load of a pipeline run whose figures are copied (its bench stage's timing)."""
    _RESULTS.note_run(name, manifest)


def tk(t: float) -> str:
    return f"{t:g}"


def _fresh(d: Path, prov: dict) -> bool:
    """``d`` holds what ``prov`` describes (a model dir or an export dir we tagged)."""
    return (d / PROV).is_file() and read_json(d / PROV) == prov


def _tag(d: Path, prov: dict) -> None:
    write_aside(d / PROV, prov)  # provenance, no figures


_SHA: dict[Path, str] = {}


def model_sha(d: Path) -> str:
    if d not in _SHA:
        _SHA[d] = sha256_file(d / "model.safetensors")[:16]
    return _SHA[d]
