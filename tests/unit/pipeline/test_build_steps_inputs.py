"""What build_steps is given beyond the command line. A run's recorded config from before a pass's settings moved
into a block still builds its steps (``restore`` reads it: re-benchmarking, a search winner scored on dev), while
the command line keeps refusing the old keys. A pass whose own code fails while it is built is a crash."""

import pytest
from omegaconf import OmegaConf

from compresslab.config import compose
from compresslab.pipeline.plan import PipelineError, build_steps, saved_config
from compresslab.registry import pass_to_dict

# BiBERT's settings as 2026-12-06's manifests recorded them (conf/pass/bibert.yaml before its recovery block)
OLD_FLAT = {"steps": 9, "lr": 0.002, "hidden_weight": 0.5, "temperature": 3.0, "eval_every": 3, "eval_examples": 16}
NEW = {"steps": 9, "lr": 0.002, "hidden_weight": 0.5, "temperature": 3.0, "select_every": 3, "select_examples": 16}


def _recorded(recovery_flat: bool):
    cfg = OmegaConf.to_container(compose(["+pipeline=bibert", "debug=smoke"]), resolve=True)
    node = cfg["pipeline"]["passes"]["bibert"]
    rec = node.pop("recovery")
    if recovery_flat:
        node.update(OLD_FLAT)
    else:
        node["recovery"] = {**rec, **NEW}
    return cfg


def test_an_old_bibert_run_config_builds_the_same_pass_as_its_new_form():
    old, new = saved_config(_recorded(True)), saved_config(_recorded(False))
    (s_old,), (s_new,) = [s for s in build_steps(old) if s.name == "bibert"], [s for s in build_steps(new)
                                                                               if s.name == "bibert"]
    assert pass_to_dict(s_old.pass_) == pass_to_dict(s_new.pass_)
    assert s_old.pass_.recovery.select_every == 3 and s_old.pass_.recovery.lr == 0.002


def test_the_command_line_form_still_refuses_the_old_keys():
    with pytest.raises(PipelineError, match="recovery.steps"):
        build_steps(OmegaConf.create(_recorded(True)))


def test_a_config_without_moved_keys_is_unchanged():
    cfg = OmegaConf.to_container(compose(["+pipeline=obert_int8", "debug=smoke"]), resolve=True)
    assert OmegaConf.to_container(saved_config(cfg)) == cfg


def test_a_fault_in_a_pass_s_code_is_a_crash_and_its_refusal_is_bad_input(monkeypatch):
    """Building a pass turns its own ValueError (a setting refused) into PipelineError, which the CLI prints as one
    line with exit 2; any other exception (a NameError in the pass, a user-registered pass's bug) propagates as
    itself: printed as bad input, a multirun would blame the job whose values were being built."""
    from compresslab.registry import get_pass

    cls = get_pass("ort_int8_dynamic")
    cfg = compose(["+pipeline=int8", "debug=smoke"])

    def broken(self):
        raise NameError("name 'coerce_block' is not defined")

    monkeypatch.setattr(cls, "__post_init__", broken)
    with pytest.raises(NameError, match="coerce_block"):
        build_steps(cfg)

    def refusing(self):
        raise ValueError("per_channel must be a bool")

    monkeypatch.setattr(cls, "__post_init__", refusing)
    with pytest.raises(PipelineError, match="step 'int8': per_channel must be a bool"):
        build_steps(cfg)
