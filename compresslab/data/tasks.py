"""Tasks: the GLUE registry, finding the data, and loading a task with its validation split.

GLUE dev is our test set; anything that selects uses ``validation``, carved (seeded) from train.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import numpy as np

from compresslab.data.carve import CARVES, carve_validation, check_carve, default_val_size
from compresslab.data.carve import check_count as _check_count
from compresslab.data.generic import GenericConfig, read_generic, resolve_file
from compresslab.data.readers import read_glue_tsv
from compresslab.data.schema import (
    DataFormatError,
    DataNotFoundError,
    Example,
    MissingSplit,
    SplitUnavailableError,
    TaskData,
    TaskKind,
    TaskSpec,
)
from compresslab.manifest import sha256_file

__all__ = [
    "CARVES", "DATA_ENV_VAR", "TASKS", "DataFormatError", "DataNotFoundError", "Example", "MissingSplit",
    "SplitUnavailableError", "TaskData", "TaskKind", "TaskSpec", "check_data_available",
    "default_val_size", "get_task", "load_run_task", "load_task", "resolve_data_root",
]

DATA_ENV_VAR = "COMPRESSLAB_DATA"
_C, _R, _E = TaskKind.CLASSIFICATION, TaskKind.REGRESSION, TaskKind.EMBEDDING
_NLI = ("entailment", "not_entailment")  # GLUE / HF datasets order: entailment = 0

TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("sst2", _C, 2, "accuracy", label_names=("negative", "positive"), glue_dir="SST-2",
                 description="SST-2 movie-review sentiment, single sentence"),
        TaskSpec("cola", _C, 2, "matthews_corr", metrics=("matthews_corr", "accuracy"),
                 label_names=("unacceptable", "acceptable"), glue_dir="CoLA",
                 columns=("source", "label", "orig_label", "sentence"),
                 description="CoLA grammatical acceptability, single sentence, no header row"),
        TaskSpec("mrpc", _C, 2, "f1", metrics=("f1", "accuracy"), label_names=("not_equivalent", "equivalent"),
                 glue_dir="MRPC", text_a="#1 String", text_b="#2 String", label="Quality",
                 encoding="utf-8-sig", description="MRPC paraphrase pairs (files start with a BOM)"),
        TaskSpec("rte", _C, 2, "accuracy", label_names=_NLI, string_labels=True, glue_dir="RTE",
                 text_a="sentence1", text_b="sentence2", description="RTE entailment pairs"),
        TaskSpec("stsb", _R, 1, "spearman", metrics=("pearson", "spearman"), glue_dir="STS-B",
                 text_a="sentence1", text_b="sentence2", label="score",
                 description="STS-B similarity 0-5 as cross-encoder regression"),
        TaskSpec("qnli", _C, 2, "accuracy", label_names=_NLI, string_labels=True, glue_dir="QNLI",
                 train_file=None, text_a="question", text_b="sentence",
                 description="QNLI question/sentence entailment; dev only (no train file shipped)"),
        TaskSpec("stsb_embedding", _E, 1, "spearman", metrics=("pearson", "spearman"), glue_dir="STS-B",
                 text_a="sentence1", text_b="sentence2", label="score",
                 description="STS-B pairs scored by cosine of sentence embeddings vs the gold score; "
                             "needs no training"),
    )
}

T = TypeVar("T")


def get_task(name: str) -> TaskSpec:
    """The spec of a registered task, or ``ValueError`` listing the known names."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise ValueError(f"unknown task {name!r}; known tasks: {known}, or 'generic' (CSV/JSONL files)") from None


def _checkout_root() -> Path | None:
    """This project's checkout (the repo root holding ``pyproject.toml``), or None for an installed package."""
    root = Path(__file__).resolve().parents[2]  # compresslab/data/tasks.py -> the repo root
    return root if (root / "pyproject.toml").is_file() else None


def resolve_data_root(configured: str | Path | None = None) -> Path:
    """Find the folder that holds ``glue/<TASK>/``.

    Precedence: the explicit argument (config ``data.root``), then ``$COMPRESSLAB_DATA``, then
    ``./data`` and ``../shared/data`` relative to the working directory, then ``../shared/data``
    beside this project's checkout (an editable install run from another directory; never a path
    inside site-packages). An explicit or env path that does not exist is an error rather than a
    silent fall-through to the defaults.
    """
    how_to = (f"Point elsewhere with data.root=/path/to/data on the command line or "
              f"{DATA_ENV_VAR}=/path/to/data in the environment (the folder that contains glue/).")
    for value, origin in ((configured, "data.root"), (os.environ.get(DATA_ENV_VAR), f"${DATA_ENV_VAR}")):
        if value not in (None, ""):
            path = Path(value).expanduser()
            if path.is_dir():
                return path.resolve()
            raise DataNotFoundError(f"data root {path} (from {origin}) is not a directory. {how_to}")
    cwd = Path.cwd()
    looked = [cwd / "data", cwd.parent / "shared" / "data"]
    checkout = _checkout_root()
    if checkout is not None and checkout.parent / "shared" / "data" not in looked:
        looked.append(checkout.parent / "shared" / "data")
    for cand in looked:
        if (cand / "glue").is_dir():
            return cand.resolve()
    places = "; ".join(["data.root (not set)", f"${DATA_ENV_VAR} (not set)"]
                       + [f"{p} (no glue/ folder)" for p in looked])
    raise DataNotFoundError(f"no data root found. Looked at: {places}. {how_to}")


def _split_paths(spec: TaskSpec, root: Path) -> dict[str, Path | None]:
    base = root / "glue" / (spec.glue_dir or spec.name)
    return {split: (base / f if f else None) for split, f in (("train", spec.train_file), ("dev", spec.dev_file))}


def check_data_available(name: str, data_root: str | Path | None = None, *, generic: dict[str, Any] | None = None) -> None:
    """Cheap check that a task's files exist, run before expensive work (model loading, fine-tuning)."""
    if generic is not None or name == "generic":
        cfg = GenericConfig.from_dict(generic or {})
        for rel in (cfg.train, cfg.dev):
            if rel:
                resolve_file(rel, lambda: _root_or_none(data_root))
        return
    spec = get_task(name)
    root = resolve_data_root(data_root)
    missing = [str(p) for p in _split_paths(spec, root).values() if p is not None and not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"task {name!r}: missing {', '.join(missing)} under data root {root}. Expected the GLUE "
            f"layout glue/{spec.glue_dir}/{{train,dev}}.tsv; see data/PROVENANCE.md for the files."
        )


def _root_or_none(data_root: str | Path | None) -> Path | None:
    try:
        return resolve_data_root(data_root)
    except DataNotFoundError:
        return None


def _seeded_rows(items: Sequence[Any], n: int | None, seed: int, stream: int) -> list[int] | None:
    """The positions of ``n`` items drawn without replacement (seeded), in file order; None when all are kept."""
    if isinstance(items, MissingSplit) or n is None or n >= len(items):
        return None
    rng = np.random.default_rng([stream, seed])
    return [int(i) for i in np.sort(rng.permutation(len(items))[:n])]


def _seeded_subset(items: Sequence[T], n: int | None, seed: int, stream: int) -> list[T]:
    """``n`` items drawn without replacement (seeded), kept in file order; all when n is None."""
    if isinstance(items, MissingSplit):
        return items
    keep = _seeded_rows(items, n, seed, stream)
    return list(items) if keep is None else [items[i] for i in keep]


def load_task(
    name: str,
    data_root: str | Path | None = None,
    *,
    val_size: int | None = None,
    val_carve: str = "random",
    seed: int = 0,
    max_train: int | None = None,
    max_dev: int | None = None,
    generic: dict[str, Any] | None = None,
) -> TaskData:
    """Load a task: train minus a seeded validation carve, the validation carve, and dev.

    ``val_carve``: ``random`` (examples) or ``grouped`` (whole texts with their duplicates and phrases:
    :mod:`compresslab.data.carve`); checked before any file is read.
    ``max_train`` / ``max_dev`` take seeded subsets after the carve (for smoke runs and tests).
    ``name == "generic"`` or a ``generic`` dict reads user CSV/TSV/JSONL files (see GenericConfig).
    """
    for value, what in ((val_size, "val_size"), (max_train, "max_train"), (max_dev, "max_dev")):
        _check_count(value, what)
    val_carve = check_carve(val_carve)
    files: dict[str, dict[str, Any]] = {}
    labels_info: dict[str, Any] = {}
    if generic is not None or name == "generic":
        raw = dict(generic or {})
        if raw.get("name") is None:
            raw["name"] = name
        cfg = GenericConfig.from_dict(raw)
        read = read_generic(cfg, lambda: _root_or_none(data_root))
        spec, root = read.spec, _root_or_none(data_root)
        train_all = read.examples["train"]
        if train_all is None:
            train_all = MissingSplit(f"generic data set {cfg.name!r} has no train file: set task.generic.train=PATH")
        dev = read.examples["dev"]
        if dev is None:
            dev = MissingSplit(f"generic data set {cfg.name!r} has no dev file: set task.generic.dev=PATH")
        for split, path in read.paths.items():
            files[split] = {"path": str(path), "sha256": sha256_file(path), "rows": len(read.examples[split] or []),
                            "encoding": read.encodings[split]}
        if read.classes is not None:
            labels_info = {"label_source": read.classes.source, "label_counts": read.classes.counts}
    else:
        spec = get_task(name)
        check_data_available(name, data_root)
        root = resolve_data_root(data_root)
        split_examples: dict[str, list[Example]] = {}
        for split, path in _split_paths(spec, root).items():
            if path is None:
                split_examples[split] = MissingSplit(
                    f"task {spec.name!r} ships no {split} split (only dev is available); "
                    f"use it for evaluation only, or pick a task with a train split"
                )
                continue
            split_examples[split] = read_glue_tsv(spec, path)
            files[split] = {"path": str(path), "sha256": sha256_file(path), "rows": len(split_examples[split])}
        train_all, dev = split_examples["train"], split_examples["dev"]

    carve = carve_validation(train_all, val_size, seed, val_carve)
    train, validation = carve.train, carve.validation
    train = _seeded_subset(train, max_train, seed, stream=1)
    dev_rows = _seeded_rows(dev, max_dev, seed, stream=2)  # which dev rows a reader rebuilds the subset from
    dev = _seeded_subset(dev, max_dev, seed, stream=2)
    info: dict[str, Any] = {
        "task": spec.name,
        "kind": spec.kind.value,
        "data_root": str(root) if root is not None else None,
        "files": files,
        "sizes": {"train": len(train), "validation": len(validation), "dev": len(dev)},
        "val_seed": seed,
        "val_size": len(validation),
        **carve.info,
        "max_train": max_train,
        "max_dev": max_dev,
        "label_names": list(spec.label_names),
        "missing_splits": {s: v.reason for s, v in (("train", train), ("dev", dev)) if isinstance(v, MissingSplit)},
        **labels_info,
    }
    return TaskData(spec=spec, train=train, validation=validation, dev=dev, info=info,
                    rows={} if dev_rows is None else {"dev": dev_rows})


def load_run_task(config: Mapping[str, Any]) -> TaskData:
    """The task a finished run read, rebuilt from its recorded config (``manifest["config"]``): the same
    data root, validation carve and size, and seed (``max_train`` / ``max_dev`` are the caller's)."""
    t = config["task"]
    return load_task(t["name"], resolve_data_root((config.get("data") or {}).get("root")), seed=int(config["seed"]),
                     val_size=t.get("val_size"), val_carve=t.get("val_carve"))
