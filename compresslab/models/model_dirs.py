"""What a path given as a model is, when it is not a model directory, and which path to give instead.

``compresslab.load``, ``load_pretrained`` and the CLI's ``model.source`` read a folder holding ``config.json``.
The paths users try first are the ones a run prints: the run directory, its ``steps/`` folder, its
``manifest.json``, a step's ``config.json``. "cannot read <path>/config.json" says none of that;
:func:`not_a_model_dir` names what the path is and the folders under it that are models (a run's torch
steps) or graphs (its ONNX steps and ``export/``, read by ``compresslab.evaluate``).
"""

from __future__ import annotations

from pathlib import Path

# a folder holding one of these is an exported graph (ONNX, OpenVINO IR), not a torch checkpoint
GRAPH_SUFFIXES = (".onnx",)
GRAPH_FILES = ("openvino_model.xml",)
MANIFEST = "manifest.json"  # a run directory's record (compresslab.manifest)


def exported_graphs(path: Path) -> list[str]:
    """The exported graph files in ``path`` (``*.onnx``, an OpenVINO IR), sorted; empty for a torch checkpoint."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.suffix in GRAPH_SUFFIXES or p.name in GRAPH_FILES)


def _run_models(run: Path, graphs_too: bool = True) -> str:
    """The models of run directory ``run``: its torch steps (the last first: the most compressed), then (with
    ``graphs_too``) its exported graphs."""
    steps = sorted(p for p in (run / "steps").glob("*") if (p / "config.json").is_file())
    torch_steps = [p for p in steps if not exported_graphs(p)]
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


def graph_not_checkpoint(path: Path, graphs: list[str]) -> str:
    """The message for a folder holding exported ``graphs`` (no torch weights) given as a model: what reads it,
    and, for a run's ONNX step or ``export/``, the run's torch model."""
    run = _run_of(path.parent)  # a run's ONNX step (steps/<NN>_<pass>/) or its export/
    where = (f"; for a torch model of the run {run}, {_run_models(run, graphs_too=False)}" if run is not None else
             "; a torch model is a run's steps/<NN>_<pass>/ dir of a torch pass, or a dir written by "
             "compresslab.save / model.save_pretrained")
    return (f"{path} holds an exported graph ({', '.join(graphs)}), not a torch checkpoint: score or time it with "
            f"compresslab.evaluate / compresslab.benchmark (or onnxruntime, optimum's ORTModel* / OVModel*){where}")


def not_a_model_dir(path: Path) -> str | None:
    """None when ``path`` holds a ``config.json``; else what ``path`` is and which path to give instead: it does
    not exist; it is a file (give its folder); it is a compresslab run directory or its ``steps/`` folder (give a
    torch step, listed; its graphs are for ``compresslab.evaluate``); or a folder without ``config.json`` (what it
    holds, and how a model directory is written)."""
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
            return f"{path} is a file of the compresslab run directory {run}, not a model: {_run_models(run)}"
        if (folder / "config.json").is_file():
            return f"{path} is a file, not a model directory: give its folder, {folder}"
        return f"{path} is a file, not a model directory: give the folder that holds config.json and the weights"
    run = _run_of(path)
    if run is not None:
        what = "a compresslab run directory" if run == path else f"the steps folder of the compresslab run {run}"
        return f"{path} is {what}, not a model: {_run_models(run)}"
    found = sorted(p.name for p in path.iterdir())
    return (f"{path} has no config.json, so it is not a model directory (it holds {found[:12] or 'nothing'}); "
            "a model directory is written by model.save_pretrained(DIR) or compresslab.save(model, DIR)")
