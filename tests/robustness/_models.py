"""Helpers of the model-input robustness cases (test_models.py, test_model_files.py): a tiny model saved as a user's
``save_pretrained`` writes it, a tiny generic CSV task, and the CLI's config, checks and loader run on it."""

from __future__ import annotations

from pathlib import Path

import torch

from compresslab.testing import tiny_sentiment, write_csv


def _save(model: torch.nn.Module, tok, d: Path) -> Path:
    """A plain Hugging Face directory, as a user's ``save_pretrained`` writes it."""
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _trained_head(model: torch.nn.Module) -> torch.nn.Module:
    """Mark the head as trained (transformers initialises a fresh head's bias to zero)."""
    with torch.no_grad():
        model.classifier.bias.add_(0.05)
    return model


def _data(tmp_path: Path, names: tuple[str, str] | None = None) -> list[str]:
    """Overrides for a tiny generic CSV task (integer labels, or the class ``names``)."""
    def rows(n, seed):
        return [[e.text_a, names[e.label] if names else str(e.label)] for e in tiny_sentiment(n, seed)]

    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows(96, 0))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], rows(32, 1))
    return ["task=generic", f"task.generic.train={train}", f"task.generic.dev={dev}", "task.max_length=32"]


def _compose(tmp_path: Path, source: Path, *extra: str, names: tuple[str, str] | None = None):
    from compresslab.config import compose

    return compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={source}",
                    f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache",
                    *_data(tmp_path, names), "task.max_length=32", *extra])


def _prepare(cfg):
    """The CLI's up-front checks (no model weights read): config, source files, data."""
    from compresslab.pipeline.plan import build_steps
    from compresslab.pipeline.state import RunState

    steps = build_steps(cfg)
    return RunState.prepare(cfg, steps), steps


def _cli_model(cfg):
    """What the CLI trains: the checks, then the source model loaded with the task's head."""
    state, steps = _prepare(cfg)
    state.load_initial()
    return state, steps


def _inputs(tok) -> dict[str, torch.Tensor]:
    return dict(tok(["a good film", "the plot was boring and bad"], padding=True, return_tensors="pt"))


def _encode(model, tok) -> torch.Tensor:
    with torch.no_grad():
        return model.base_model(**_inputs(tok)).last_hidden_state


def _finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
