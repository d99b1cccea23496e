"""Inputs and configs of the run-level robustness cases (identity, run status, disk use).

A tiny random BERT with its tokenizer saved as a model folder, and a small two-label CSV, run through
the real pipeline with ``model=local task=generic debug=smoke`` and no bench or report. Imported as
``from _runs import ...``: ``conftest.py`` puts this folder on ``sys.path`` (the suite runs with
``--import-mode=importlib``, which puts none there).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WORDS = ["good", "bad", "great", "awful", "movie", "film", "fun", "boring"]


def write_csv(path: Path, n: int, seed: int) -> Path:
    """``n`` rows of five random words and a ``pos``/``neg`` label under a ``text,label`` header."""
    rng = random.Random(seed)
    rows = ["text,label"] + [f"{' '.join(rng.choice(WORDS) for _ in range(5))},{rng.choice(['pos', 'neg'])}"
                             for _ in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def make_inputs(root: Path, weights: str = "safetensors", seed: int = 0) -> Path:
    """``root/model`` (tiny BERT + tokenizer; weights as one safetensors file, ``shards`` or a
    ``pytorch_model.bin``) and ``root/{train,dev}.csv``; returns ``root``."""
    import torch

    from compresslab.models.tiny import tiny_model, tiny_tokenizer

    model_dir = root / "model"
    tok = tiny_tokenizer(model_dir)
    tok.save_pretrained(model_dir)
    m = tiny_model("bert", seed=seed)
    if weights == "bin":
        m.config.save_pretrained(model_dir)
        torch.save(m.state_dict(), model_dir / "pytorch_model.bin")
    else:
        m.save_pretrained(model_dir, **({"max_shard_size": "40KB"} if weights == "shards" else {}))
    write_csv(root / "train.csv", 64, seed)
    write_csv(root / "dev.csv", 16, seed + 1)
    return root


def cli_args(root: Path, out: Path, *extra: str, pipeline: str = "int8") -> list[str]:
    """The command-line overrides of a tiny run on ``root``'s inputs, writing under ``out``."""
    return [f"+pipeline={pipeline}", "debug=smoke", "model=local", f"model.source={root / 'model'}",
            "task=generic", f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}",
            "run.threads=1", f"paths.output_dir={out}", f"paths.cache_dir={out}/cache", "bench.enabled=false",
            "report=false", *extra]


def command_overrides(command: str) -> tuple[dict[str, str], list[str]]:
    """A recorded rerun command (``[NAME=value ...] python -m compresslab <overrides>``) split as a POSIX shell
    splits it: (the variables it sets, the overrides). AssertionError for another shape."""
    import shlex

    words = shlex.split(command)
    n = next(i for i, w in enumerate(words) if w == "python")
    env = dict(w.split("=", 1) for w in words[:n])
    assert words[n:n + 3] == ["python", "-m", "compresslab"] and all(k.isidentifier() for k in env), command
    return env, words[n + 3:]


def run_cfg(root: Path, out: Path, *extra: str, pipeline: str = "int8") -> Any:
    """The composed config of :func:`cli_args` (what ``python -m compresslab`` would run)."""
    from compresslab.config import compose

    return compose(cli_args(root, out, *extra, pipeline=pipeline))


def stopped_run(root: Path, out: Path, *extra: str) -> Path:
    """A run dir whose manifest recorded the inputs, stopped before its first step (nothing trained)."""
    from compresslab.manifest import read_json
    from compresslab.pipeline import run

    d = run(run_cfg(root, out, "run.stop_after=0", *extra))
    assert read_json(d / "manifest.json")["status"] == "stopped"
    return d


def stopped_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """(inputs root, run dir): fresh inputs under ``tmp_path/in`` and their run under ``tmp_path/out``,
    stopped before its first step (:func:`stopped_run`)."""
    root = make_inputs(tmp_path / "in")
    return root, stopped_run(root, tmp_path / "out")


def append_row(path: Path) -> None:
    """One more example at the end of a CSV (same header, a new sha256)."""
    with open(path, "a") as f:
        f.write("fun fun film,pos\n")


class Restore:
    """Put a file's bytes back after a test changed it (the finished run's inputs are shared)."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, path.read_bytes()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.write_bytes(self.data)


_FINISHED: dict[str, tuple[Path, Path, Path]] = {}


def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(inputs root, output root, run dir) of one real tiny int8 run (finetune -> int8), finished.

    Made once per test session and shared by the modules that read it (identity, disk): a module
    fixture per file would train and export it once per file.
    """
    if "run" not in _FINISHED:
        from compresslab.manifest import read_json
        from compresslab.pipeline import run

        base = tmp_path_factory.mktemp("finished")
        root, out = make_inputs(base / "in"), base / "out"
        d = run(run_cfg(root, out))
        assert read_json(d / "manifest.json")["status"] == "finished"
        _FINISHED["run"] = (root, out, d)
    return _FINISHED["run"]
