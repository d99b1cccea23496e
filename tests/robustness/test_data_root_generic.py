"""``task=generic`` with relative file names: tried against the working directory, then ``data.root``
(conf/task/generic.yaml says so). The run used to pass no root for generic tasks, so ``data.root`` was ignored and
only ``$COMPRESSLAB_DATA`` or ``./data`` were searched: a user's ``data.root=/my/data`` failed with "not found"."""

from __future__ import annotations

from _data_files import POS_NEG, compose_generic, csv_file, table_text
from compresslab.pipeline.plan import build_steps
from compresslab.pipeline.state import RunState


def test_relative_generic_files_are_found_under_data_root(tmp_path, monkeypatch) -> None:
    root = tmp_path / "mydata"
    root.mkdir()
    for split in ("train", "dev"):
        csv_file(root / f"{split}.csv", table_text("text,label", POS_NEG * 20))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("COMPRESSLAB_DATA", raising=False)
    cfg = compose_generic(tmp_path, f"data.root={root}", "task.generic.train=train.csv", "task.generic.dev=dev.csv")
    state = RunState.prepare(cfg, build_steps(cfg))
    assert len(state.task.dev) > 0 and len(state.task.train) > 0  # found under data.root (smoke slices the splits)


def test_a_data_root_that_does_not_exist_is_refused_for_generic_tasks_too(tmp_path, monkeypatch) -> None:
    """As for GLUE tasks: a set data.root that is not a directory is an error naming it, not silently skipped."""
    import pytest

    from compresslab.data.schema import DataNotFoundError

    csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG * 20))
    monkeypatch.chdir(tmp_path)
    cfg = compose_generic(tmp_path, f"data.root={tmp_path / 'nope'}", "task.generic.train=train.csv",
                          "task.generic.dev=train.csv")
    with pytest.raises(DataNotFoundError, match="nope.*from data.root"):
        RunState.prepare(cfg, build_steps(cfg))
