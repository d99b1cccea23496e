"""Task registry, data-root resolution and the errors users see (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.data.schema import MissingSplit, SplitUnavailableError, require_examples
from compresslab.data.tasks import (
    DATA_ENV_VAR,
    TASKS,
    DataNotFoundError,
    Example,
    TaskData,
    TaskKind,
    TaskSpec,
    check_data_available,
    default_val_size,
    load_task,
    resolve_data_root,
)


def test_registry_has_required_tasks_with_consistent_specs() -> None:
    for name in ("sst2", "cola", "mrpc", "rte", "stsb", "qnli", "stsb_embedding"):
        spec = TASKS[name]
        assert spec.name == name
        assert spec.primary_metric in spec.metrics
    assert TASKS["stsb_embedding"].kind is TaskKind.EMBEDDING
    assert TASKS["stsb"].kind is TaskKind.REGRESSION
    assert TASKS["cola"].primary_metric == "matthews_corr"
    assert TASKS["mrpc"].primary_metric == "f1"
    assert TASKS["rte"].label_names == ("entailment", "not_entailment")  # GLUE/HF: entailment = 0
    assert TASKS["qnli"].train_file is None


def test_task_kind_accepts_strings_and_spec_validates() -> None:
    spec = TaskSpec("x", "regression", 1, "pearson")  # type: ignore[arg-type]
    assert spec.kind is TaskKind.REGRESSION and spec.metrics == ("pearson",)
    with pytest.raises(ValueError, match="allowed: classification, regression, embedding"):
        TaskSpec("x", "ranking", 1, "pearson")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not apply to classification"):
        TaskSpec("x", TaskKind.CLASSIFICATION, 2, "spearman")
    with pytest.raises(ValueError, match="num_labels >= 2"):
        TaskSpec("x", TaskKind.CLASSIFICATION, 1, "accuracy")


def test_unknown_task_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_task("mnli", tmp_path)
    for name in TASKS:
        assert name in str(err.value)
    assert "generic" in str(err.value)


def test_resolve_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env, local = tmp_path / "explicit", tmp_path / "env", tmp_path / "work" / "data"
    shared = tmp_path / "shared" / "data"
    for d in (explicit, env, local / "glue", shared / "glue"):
        d.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv(DATA_ENV_VAR, str(env))
    assert resolve_data_root(explicit) == explicit.resolve()
    assert resolve_data_root() == env.resolve()
    monkeypatch.delenv(DATA_ENV_VAR)
    assert resolve_data_root() == local.resolve()
    (local / "glue").rmdir()
    assert resolve_data_root() == shared.resolve()  # ../shared/data relative to cwd


def test_missing_root_lists_every_place_and_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.data.tasks as tasks

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(tasks, "_checkout_root", lambda: tmp_path / "checkout" / "repo")  # no shared/ beside it
    with pytest.raises(DataNotFoundError) as err:
        resolve_data_root()
    msg = str(err.value)
    assert str(tmp_path / "work" / "data") in msg
    assert str(tmp_path / "shared" / "data") in msg
    assert str(tmp_path / "checkout" / "shared" / "data") in msg  # the checkout's neighbour, looked at last
    assert "data.root=" in msg and f"{DATA_ENV_VAR}=" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_explicit_or_env_root_that_does_not_exist_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataNotFoundError, match="from data.root"):
        resolve_data_root(tmp_path / "nope")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match=f"from \\${DATA_ENV_VAR}"):
        resolve_data_root()


def test_check_data_available_names_missing_file(tmp_path: Path) -> None:
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    (tmp_path / "glue" / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataNotFoundError, match="RTE/train.tsv"):
        check_data_available("rte", tmp_path)
    with pytest.raises(DataNotFoundError, match="RTE/train.tsv"):
        load_task("rte", tmp_path)


def test_bad_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_train"):
        load_task("sst2", tmp_path, max_train=-1)
    with pytest.raises(ValueError, match="val_size"):
        load_task("sst2", tmp_path, val_size=1.5)  # type: ignore[arg-type]


def test_default_val_size_is_five_percent_capped_at_1000() -> None:
    assert default_val_size(67349) == 1000
    assert default_val_size(8551) == 427
    assert default_val_size(10) == 0


def test_missing_split_is_empty_until_someone_needs_it() -> None:
    split = MissingSplit("task 'qnli' ships no train split")
    assert len(split) == 0 and not split
    assert isinstance(split[:10], MissingSplit) and split[:10].reason == split.reason
    with pytest.raises(SplitUnavailableError, match="ships no train split"):
        require_examples(split, "train")
    data = TaskData(TASKS["qnli"], split, MissingSplit("none"), [Example("q", "s", 0)], {})
    with pytest.raises(SplitUnavailableError, match="qnli"):
        data.require_train()
