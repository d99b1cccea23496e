"""What one step asks of another goes through a declared hook, never a field read by name (session 40): a pass
whose field happens to share a name with another pass's setting (``outliers``, ``optimize``, ``recovery``,
``ffn_grid``, ``latency`` / ``latency_limit``) is not checked under that pass's rules, and the passes that have the
behaviour still are. Before, each fake below was refused (or treated as distilling) for its field's name alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from compresslab.passes.hawq import Hawq
from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic
from compresslab.passes.ort_matmul_nbits import OrtMatmulNBits
from compresslab.pipeline.plan import PipelineError, Step, check_teacher_made, needs_teacher
from compresslab.pipeline.preflight import check_deploy_settings
from compresslab.pipeline.settings import SettingsError
from compresslab.registry import get_pass
from compresslab.training.recovery import Recovery
from compresslab.types import Pass, Stage


@dataclass
class _Fake:
    """A pass that meets the Protocol and declares nothing optional."""

    name: ClassVar[str] = "fake"
    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False

    def check(self, task: Any) -> None:
        """Nothing to check."""

    def apply(self, model: Any, ctx: Any) -> Any:
        """Nothing to do."""


@dataclass
class _Splits(_Fake):
    """An ONNX pass with its own ``outliers`` / ``optimize`` settings, meaning something else than int8's."""

    stage: ClassVar[Stage] = Stage.ONNX
    outliers: str = "split"
    optimize: bool = False


@dataclass
class _Recovers(_Fake):
    """A pass whose ``recovery`` is not a KD recovery (it trains on the task alone, say)."""

    recovery: Recovery = field(default_factory=lambda: Recovery(steps=100, hardness=1.0))


@dataclass
class _Grid(_Fake):
    """A pass with an ``ffn_grid`` setting that leaves the FFN widths as they are."""

    ffn_grid: int = 6


@dataclass
class _PricedElsewhere(_Fake):
    """A weight-quantizing pass with a ``latency`` / ``latency_limit`` of its own, priced on no MatMulNBits level."""

    quantizes_weights: ClassVar[bool] = True
    latency_limit: float = 0.8
    latency: Any = field(default_factory=lambda: SimpleNamespace(accuracy_level=4))


def _settings(*, optimize: bool, runtime: str) -> Any:
    """The two run settings ``check_deploy_settings`` hands a pass."""
    return SimpleNamespace(export=SimpleNamespace(optimize=optimize), deploy=SimpleNamespace(runtime=runtime))


def test_the_fakes_are_passes():
    for fake in (_Splits(), _Recovers(), _Grid(), _PricedElsewhere()):
        assert isinstance(fake, Pass)


@pytest.mark.parametrize("optimize,runtime", [(False, "ort"), (True, "openvino")])
def test_an_outliers_field_is_not_int8s_outlier_split(optimize, runtime):
    check_deploy_settings(_settings(optimize=optimize, runtime=runtime), [Step(0, "mine", _Splits())])


@pytest.mark.parametrize("kw,optimize,runtime,match", [
    ({"optimize": False}, False, "ort", r"^pipeline\.passes\.int8\.outliers=split rewrites .* leave it unfused"),
    ({}, True, "openvino", r"^pipeline\.passes\.int8\.outliers=split .*deploy\.runtime=openvino deploys an int8 IR"),
])
def test_int8s_outlier_split_is_still_checked(kw, optimize, runtime, match):
    step = Step(0, "int8", OrtInt8Dynamic(outliers="split", **kw))
    with pytest.raises(SettingsError, match=match):
        check_deploy_settings(_settings(optimize=optimize, runtime=runtime), [step])
    check_deploy_settings(_settings(optimize=optimize, runtime=runtime), [Step(0, "int8", OrtInt8Dynamic(**kw))])


def test_a_recovery_field_is_not_a_kd_recovery():
    assert not needs_teacher(_Recovers())
    check_teacher_made([Step(0, "mine", _Recovers())], input_is_teacher=False)


# the settings each pass needs besides its recovery to be built (obert's default gradual mode needs recovery steps)
OTHER = {"magnitude": {}, "obert": {"mode": "oneshot"}, "int8_qat": {}, "layer_drop": {"num_layers": 2}, "hawq": {},
         "ziplm": {}, "structured_l1": {}}


@pytest.mark.parametrize("name", sorted(OTHER))
def test_a_pass_with_a_kd_recovery_still_needs_a_teacher(name):
    p = get_pass(name)(recovery={"steps": 10, "hardness": 1.0}, **OTHER[name])
    assert needs_teacher(p)
    with pytest.raises(PipelineError, match=f"step {name!r} distils from a teacher"):
        check_teacher_made([Step(0, name, p)], input_is_teacher=False)
    assert not needs_teacher(get_pass(name)(recovery={"steps": 0}, **OTHER[name]))
    assert not needs_teacher(get_pass(name)(recovery={"steps": 10, "hardness": 0.0}, **OTHER[name]))


def test_an_ffn_grid_field_leaves_no_grid_for_a_later_step():
    get_pass("ziplm")(ffn_grid=4).check_after([_Grid()])
    get_pass("obert")(mask_type="block4").check_after([_Grid()])


def test_a_structured_steps_grid_is_still_checked():
    earlier = [get_pass("structured_l1")(ffn_grid=6)]
    with pytest.raises(ValueError, match="ffn_grid=4 does not divide the earlier structured_l1 step's ffn_grid=6"):
        get_pass("ziplm")(ffn_grid=4).check_after(earlier)
    with pytest.raises(ValueError, match="leaves FFN widths on ffn_grid=6, not a multiple of 4"):
        get_pass("obert")(mask_type="block4").check_after(earlier)


def test_a_latency_field_is_not_hawqs_priced_budget():
    OrtMatmulNBits(accuracy_level=0).check_after([_PricedElsewhere()])
    with pytest.raises(ValueError, match=r"hawq latency\.accuracy_level=4 .*set both to the same value"):
        OrtMatmulNBits(accuracy_level=0).check_after([Hawq(avg_bits=None, latency_limit=0.8,
                                                           latency={"accuracy_level": 4})])
