"""What a path given as a model is, when it is not a model directory, and which path to give instead.

``compresslab.load``, ``load_pretrained`` and the CLI's ``model.source`` read a folder holding ``config.json``.
The paths users try first are the ones a run prints: the run directory, its ``steps/`` folder, its
``manifest.json``, a step's ``config.json``. "cannot read <path>/config.json" says none of that;
:func:`not_a_model_dir` names what the path is and the folders under it that are models (a run's torch
steps) or graphs (its ONNX steps and ``export/``, read by ``compresslab.evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

# a folder holding one of these is an exported graph (ONNX, OpenVINO IR), not a torch checkpoint
GRAPH_SUFFIXES = (".onnx",)
GRAPH_FILES = ("openvino_model.xml",)
MANIFEST = "manifest.json"  # a run directory's record (compresslab.manifest)
# plain weight layouts transformers writes, in the order from_pretrained prefers them
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)
# what reads an exported graph, for every message that meets one. optimum's loaders read the same layout, but
# optimum does not import beside this project's transformers 5 (README "optimum")
GRAPH_READERS = ("compresslab.evaluate / compresslab.benchmark (or onnxruntime / openvino directly; optimum's "
                 "ORTModel* / OVModel* need an environment of their own with transformers<4.58)")


def exported_graphs(path: Path) -> list[str]:
    """The exported graph files in ``path`` (``*.onnx``, an OpenVINO IR), sorted; empty for a torch checkpoint."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.suffix in GRAPH_SUFFIXES or p.name in GRAPH_FILES)


def _run_models(run: Path, graphs_too: bool = True, extra_weights: Sequence[str] = ()) -> str:
    """The models of run directory ``run``: its torch steps (the last first: the most compressed; a step folder
    counts when it holds weights, plain or one of ``extra_weights``, so a step stopped before its checkpoint was
    written is not offered), then (with ``graphs_too``) its exported graphs."""
    steps = sorted(p for p in (run / "steps").glob("*") if (p / "config.json").is_file())
    torch_steps = [p for p in steps if _holds_weights(p, extra_weights)]
    graphs = [p for p in steps if exported_graphs(p)] + [p for p in (run / "export",) if exported_graphs(p)]
    parts = []
    if torch_steps:
        earlier = ", ".join(p.name for p in reversed(torch_steps[:-1]))
        parts.append(f"use one of its torch steps: {torch_steps[-1]} (the last" + (f"; earlier: {earlier}" if earlier
                                                                                    else "") + ")")
    if graphs and graphs_too:
        parts.append(f"{' and '.join(f'{p.relative_to(run)}/' for p in graphs)} are exported graphs (score or time "
                     "them with compresslab.evaluate / compresslab.benchmark)")
    return "; ".join(parts) if parts else "it holds no finished torch step yet"


def _run_of(path: Path) -> Path | None:
    """The run directory ``path`` is, or is the ``steps/`` folder of; None otherwise."""
    if (path / MANIFEST).is_file():
        return path
    if path.name == "steps" and (path.parent / MANIFEST).is_file():
        return path.parent
    return None


def graph_not_checkpoint(path: Path, graphs: list[str], extra_weights: Sequence[str] = ()) -> str:
    """The message for a folder holding exported ``graphs`` (no torch weights) given as a model: what reads it,
    and, for a run's ONNX step or ``export/``, the run's torch model."""
    run = _run_of(path.parent)  # a run's ONNX step (steps/<NN>_<pass>/) or its export/
    where = (f"; for a torch model of the run {run}, {_run_models(run, False, extra_weights)}" if run is not None else
             "; a torch model is a run's steps/<NN>_<pass>/ dir of a torch pass, or a dir written by "
             "compresslab.save / model.save_pretrained")
    return (f"{path} holds an exported graph ({', '.join(graphs)}), not a torch checkpoint: score or time it with "
            f"{GRAPH_READERS}{where}")


def _holds_weights(path: Path, extra_weights: Sequence[str]) -> bool:
    return any((path / f).is_file() for f in (*WEIGHT_FILES, *extra_weights))


def weights_refusal(path: Path, extra_weights: Sequence[str] = (), given: str = "compresslab.load()") -> str | None:
    """None when folder ``path`` holds torch weights (:data:`WEIGHT_FILES`, or one of ``extra_weights``:
    compresslab's encodings); else why it is no torch checkpoint: it holds exported graphs
    (:func:`graph_not_checkpoint`), or no weights at all (what it holds, and how to write them; ``given`` names
    the argument the folder was given as)."""
    if _holds_weights(path, extra_weights):
        return None
    graphs = exported_graphs(path)
    if graphs:  # a run's ONNX step or export/ (or an IR): a deployed graph, not a torch checkpoint
        return graph_not_checkpoint(path, graphs, extra_weights)
    found = sorted(p.name for p in path.iterdir())
    return (f"no {SAFETENSORS} (or {', '.join((*WEIGHT_FILES[1:], *extra_weights))}) in {path}; it holds "
            f"{found[:12]}. Save the model there with model.save_pretrained(DIR) (safetensors), or give "
            f"{given} the directory that holds its weights")


def not_a_model_dir(path: Path, extra_weights: Sequence[str] = (), given: str = "compresslab.load()") -> str | None:
    """None when ``path`` holds a ``config.json``; else what ``path`` is and which path to give instead: it does
    not exist; it is a file (its folder, when that is a torch checkpoint: :func:`weights_refusal` with
    ``extra_weights`` and ``given``; else why the folder is none either, an exported graph's folder going straight
    to what reads it); an exported graph file (what reads it); a compresslab run directory or its ``steps/``
    folder (give a torch step, listed; its graphs are for ``compresslab.evaluate``); or a folder without
    ``config.json`` (what it holds, and how a model directory is written). A path it advises is never one the
    same call then refuses."""
    path = Path(path)
    if (path / "config.json").is_file():
        return None
    if not path.exists():
        # a hub id ("bert-base-uncased", "org/name") given as a path: say that nothing is downloaded
        hub = not path.is_absolute() and len(path.parts) <= 2 and not str(path).startswith(".")
        return f"{path} does not exist" + (" (compresslab reads local model directories; nothing is downloaded: "
                                           "save the model with model.save_pretrained(DIR) and give DIR)" if hub else "")
    if not path.is_dir():
        folder = path.parent
        run = _run_of(folder)
        if run is not None:
            return (f"{path} is a file of the compresslab run directory {run}, not a model: "
                    f"{_run_models(run, extra_weights=extra_weights)}")
        if (folder / "config.json").is_file():
            why = weights_refusal(folder, extra_weights, given)
            if why is None:
                return f"{path} is a file, not a model directory: give its folder, {folder}"
            return f"{path} is a file, not a model directory, and its folder is not a torch checkpoint either: {why}"
        if path.suffix in GRAPH_SUFFIXES or path.name in GRAPH_FILES:
            return f"{path} is an exported graph, not a torch checkpoint: score or time it with {GRAPH_READERS}"
        return f"{path} is a file, not a model directory: give the folder that holds config.json and the weights"
    run = _run_of(path)
    if run is not None:
        what = "a compresslab run directory" if run == path else f"the steps folder of the compresslab run {run}"
        return f"{path} is {what}, not a model: {_run_models(run, extra_weights=extra_weights)}"
    found = sorted(p.name for p in path.iterdir())
    return (f"{path} has no config.json, so it is not a model directory (it holds {found[:12] or 'nothing'}); "
            "a model directory is written by model.save_pretrained(DIR) or compresslab.save(model, DIR)")
