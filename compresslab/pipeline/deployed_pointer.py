"""The run dir's one obvious answer to "which file do I ship?": ``DEPLOYED.txt``.

A run dir holds several deployable-looking folders (``steps/NN_<onnx pass>/``, ``export/``, ``export/openvino/``)
and only one is what the run scored and deploys: with ``deploy=openvino`` it is the IR, not the int8 step
folder, and ``export/model.onnx`` is the fp32 model. The manifest names it (``deploy.path`` / ``deploy.folder``);
this text file names it for someone reading the folders alone. A plain file, not a symlink: a symlink to
``export/openvino`` breaks when the run dir is copied by tools that do not keep links (zip, object stores,
``cp`` without ``-a``) and would point at a folder a copy elsewhere does not have; the file's relative paths
stay true in any copy of the whole run dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compresslab.eval.scoring_settings import SCORING_FILE, read_scoring_settings
from compresslab.fileio import atomic_write_text

POINTER = "DEPLOYED.txt"


def deployed_paths(record: Mapping[str, Any]) -> dict[str, str]:
    """``path`` (the deployed graph, relative to the run dir) and ``folder`` (the folder that ships whole:
    graph, config, tokenizer, scoring settings) of an ``export.deployed`` record."""
    path = str(record["path"])
    return {"path": path, "folder": str(Path(path).parent) + "/"}


def write_pointer(run_dir: Path, record: Mapping[str, Any]) -> Path:
    """Write ``run_dir/DEPLOYED.txt`` (atomically) naming the deployed folder and file of ``record``
    (``export.deployed``), its runtime, and the length its tokenizer truncates at."""
    where = deployed_paths(record)
    folder = run_dir / where["folder"]
    length = read_scoring_settings(folder).get("max_length")
    fmt = f", {record['precision']}" if record.get("precision") else ""
    lines = [
        f"Deployed: {where['path']}  (runtime {record.get('runtime', '?')}{fmt}; label {record.get('label', '?')})",
        f"Ship the whole folder {where['folder']} (graph, config, tokenizer, {SCORING_FILE}).",
        *([f"Its tokenizer truncates at max_length={length}, the length the run scored at "
           f"(tok(text, truncation=True))."] if length else []),
        "Any other model folder here (under steps/ or export/) is an intermediate or a baseline, not what was "
        "scored as deployed.",
        "The same path is manifest.json's deploy.path (and eval/metrics.json's deployed_path).",
    ]
    path = run_dir / POINTER
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


__all__ = ["POINTER", "deployed_paths", "write_pointer"]
