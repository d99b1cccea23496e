"""A pass setting once settable only as ``+pipeline.passes.<step>.<key>=v`` (missing from the pass's YAML) keeps
working in that form after the YAML lists it (Hydra alone refuses it: "an item is already at ..."), in compose() and
on the command line; a key the pass does not have is still refused, naming the closest one."""

import sys

import pytest

from compresslab import cli
from compresslab.config import compose
from compresslab.pipeline.plan import PipelineError, build_steps


def test_the_plus_form_of_a_listed_setting_composes_and_sets_it():
    cfg = compose(["+pipeline=obert_int8", "debug=smoke", "+pipeline.passes.obert.checkpoint_every=2"])
    assert cfg.pipeline.passes.obert.checkpoint_every == 2
    with pytest.raises(PipelineError, match="did you mean 'checkpoint_every'"):
        build_steps(compose(["+pipeline=obert_int8", "debug=smoke", "+pipeline.passes.obert.chekpoint_every=2"]))


def test_the_command_line_hands_hydra_the_form_it_checked(monkeypatch):
    seen = {}

    def fake_main(**kw):
        def wrap(fn):
            def run():
                seen["argv"] = list(sys.argv[1:])
            return run
        return wrap

    import hydra

    monkeypatch.setattr(hydra, "main", fake_main)
    monkeypatch.setattr(sys, "argv", ["compresslab", "+pipeline=obert_int8", "debug=smoke",
                                      "+pipeline.passes.obert.checkpoint_every=2", "--cfg", "job"])
    cli.main()
    assert seen["argv"] == ["+pipeline=obert_int8", "debug=smoke", "++pipeline.passes.obert.checkpoint_every=2",
                            "--cfg", "job"]
