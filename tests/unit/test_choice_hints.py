"""A misspelled choice is refused with the close allowed value named ("did you mean ...?"), wherever the
choice is checked: the shared helpers (check_choice, coerce_enum) and each setting that lists its own choices.
Session 46's trial: ``int8_formats=[matmulint]`` listed the formats but did not point at ``matmulinteger``."""

from __future__ import annotations

from typing import Callable

import pytest

from compresslab.validate import check_choice, choice_hint, coerce_enum


def _enum() -> None:
    from compresslab.search.objective import Objective

    coerce_enum(Objective, "latncy", "search.objective")


def _train_config() -> None:
    from compresslab.training.loop import TrainConfig

    TrainConfig(schedule="linaer")


def _finetune() -> None:
    from compresslab.passes.finetune import Finetune

    Finetune(preset="benh")


def _search_deploy() -> None:
    from compresslab.search.objective import SearchSettings

    SearchSettings(deploy="openvno")


def _latency_runtime() -> None:
    from compresslab.pruning.speedup import SpeedupSettings

    SpeedupSettings(latency_runtime="openvino_int9")


def _keep() -> None:
    from compresslab.pipeline.disk import check_keep

    check_keep("minmal")


def _carve() -> None:
    from compresslab.data.carve import check_carve

    check_carve("groupd")


def _generic_kind() -> None:
    from compresslab.data.generic import GenericConfig

    GenericConfig(kind="regresion", train="a.csv", dev="b.csv")


def _generic_format() -> None:
    from compresslab.data.generic import GenericConfig

    GenericConfig(format="jsnl", train="a.csv", dev="b.csv")


def _config_group() -> None:
    from hydra.errors import MissingConfigException

    from compresslab.config import ConfigError, composition_message

    error = MissingConfigException("no config", missing_cfg_file="pipeline/obert_int9",
                                   options=["int8", "obert_int8", "ziplm_int8"])
    raise ConfigError(composition_message(error))


def _deepsparse_format() -> None:
    from compresslab.pipeline.settings import INT8_FORMATS

    check_choice("matmulint", INT8_FORMATS, "int8_formats")


SITES: dict[str, tuple[Callable[[], None], str]] = {
    "coerce_enum": (_enum, "latency"),
    "training schedule": (_train_config, "linear"),
    "finetune preset": (_finetune, "bench"),
    "search.deploy": (_search_deploy, "openvino"),
    "latency_runtime": (_latency_runtime, "openvino_int8"),
    "run.keep": (_keep, "minimal"),
    "val_carve": (_carve, "grouped"),
    "task.generic.kind": (_generic_kind, "regression"),
    "task.generic.format": (_generic_format, "jsonl"),
    "a config group option": (_config_group, "obert_int8"),
    "check_choice": (_deepsparse_format, "matmulinteger"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_misspelled_choice_names_the_close_one(site: str) -> None:
    call, right = SITES[site]
    with pytest.raises(ValueError) as info:
        call()
    assert f"did you mean {right!r}?" in str(info.value), str(info.value)


def test_no_hint_for_a_far_value_or_a_non_text_one() -> None:
    assert choice_hint("zzzzzz", ("linear", "constant")) == ""
    assert choice_hint(3, ("3", "4")) == ""  # a number is not text: its type is the problem, not its spelling
    with pytest.raises(ValueError) as info:
        check_choice("zzzzzz", ("linear", "constant"), "schedule")
    assert "did you mean" not in str(info.value)
